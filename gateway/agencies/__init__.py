"""The agency registry (config) and the agencies' registered signing keys (storage)."""
