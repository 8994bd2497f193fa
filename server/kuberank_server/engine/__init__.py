"""vLLM's async engine, in-process: model kinds, prompts and the scorer over them."""


class EngineConfigurationError(ValueError):
    """The engine cannot start as configured, for a reason `str()` states with the numbers:
    reported in one line (and the termination message), with no traceback."""
