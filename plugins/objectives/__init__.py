"""Built-in objectives: what is optimised."""
