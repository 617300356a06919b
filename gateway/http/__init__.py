"""The HTTP side: the app factory, middleware, TLS and the handlers shared by both listeners."""
