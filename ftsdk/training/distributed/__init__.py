"""Distributed training (DDP, FSDP2, DeepSpeed) and its launcher."""
