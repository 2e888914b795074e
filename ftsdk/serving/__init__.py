"""``ftsdk serve``: an OpenAI-compatible server over one base model and many adapters."""
