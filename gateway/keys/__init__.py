"""The gateway's own keys: JOSE keys (encryption, receipt signing), data-at-rest keys, and the
development PKI that `init` and `agency credentials` use."""
