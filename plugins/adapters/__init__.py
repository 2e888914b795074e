"""Built-in adapters: how parameters are trained."""
