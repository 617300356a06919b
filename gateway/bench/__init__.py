"""The benchmark (`cmr-gateway-bench`, docs/performance.md): the gateway measured against its own
ceiling, the rate at which one core opens envelopes with the gateway's own opener and keys."""
