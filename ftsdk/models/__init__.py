"""Model plumbing: which model, loading it, devices and threads, PEFT wrapping, generation, perplexity."""
