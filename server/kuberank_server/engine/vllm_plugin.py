"""A vLLM general plugin (entry point group `vllm.general_plugins`, see pyproject): vLLM runs
`register` in each of its processes, the engine core and workers included, before the model
loads.

It makes vLLM 0.32 on CPU reuse its compile cache. vLLM saves the compiled model under
`VLLM_CACHE_ROOT` and, on the next start, loads it and calls `finalize_loading` on the loaded
artifact. Only artifacts of vLLM's own compile backend have that method; on CPU vLLM compiles
with torch's inductor backend, whose loaded artifact is a plain function, so every load fails
("Compiling model again due to a load failure ... 'function' object has no attribute
'finalize_loading'") and the model compiles again at every start. That artifact needs no
finalising (it loads its compiled code on its first call, vLLM's warm-up), so a no-op method
lets the load succeed. An artifact that has the method is left alone, so this changes nothing
on GPU or once vLLM fixes the CPU path.
"""

from __future__ import annotations

from typing import Any


def register() -> None:
    try:
        from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable
    except ImportError:  # another torch: nothing of this shape to fix
        return
    method = BundledAOTAutogradSerializableCallable.__dict__.get("deserialize_compile_artifacts")
    if not isinstance(method, classmethod) or getattr(method.__func__, "_kuberank", False):
        return  # not the expected shape, or already wrapped in this process
    load = method.__func__

    def deserialize_compile_artifacts(cls: type, data: bytes) -> Any:
        compiled = load(cls, data)
        if not hasattr(compiled, "finalize_loading"):
            compiled.finalize_loading = _nothing_to_finalize
        return compiled

    deserialize_compile_artifacts._kuberank = True  # type: ignore[attr-defined]
    BundledAOTAutogradSerializableCallable.deserialize_compile_artifacts = classmethod(  # type: ignore[method-assign,assignment]
        deserialize_compile_artifacts
    )


def _nothing_to_finalize(vllm_config: Any) -> None:
    """Stands in for `finalize_loading` on an artifact that loads itself on first call."""
