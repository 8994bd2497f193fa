"""vLLM's async engine, in-process: model kinds, prompts and the scorer over them."""
