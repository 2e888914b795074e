"""Built-in mergers: how several models (or adapters) become one, tensor by tensor on ftsdk's streaming engine."""
