"""The HTTP layer: the app, its middleware, limits below it, connections, TLS, error envelope."""
