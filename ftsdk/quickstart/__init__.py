"""The quickstart: LoRA-tune the default model on a bundled ticket-routing task and show the gain."""
