"""Adapters: formats turn what an agency sends into the canonical notification; channels bring
envelopes in by routes other than the HTTPS API. Adapters know their format and nothing of
storage: everything after them is the one intake pipeline."""
