"""The audit log: append-only, hash-chained, verifiable from the command line."""
