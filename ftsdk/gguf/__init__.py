"""GGUF: convert transformers folders and PEFT LoRA adapters to GGUF, quantize with llama.cpp, run and verify."""
