"""kuberank rerank server: vLLM in-process behind a JWT-protected, multi-dialect rerank API."""

__version__ = "0.1.0"
