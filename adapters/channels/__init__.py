"""Channel adapters (drop folder, email) bring envelopes to the intake pipeline."""
