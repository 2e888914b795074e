"""Built-in quantizers: GGUF, GPTQ, AWQ, bitsandbytes."""
