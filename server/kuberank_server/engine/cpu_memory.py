"""The KV cache of vLLM's CPU backend, sized in bytes to fit the container it runs in.

vLLM reads `--gpu-memory-utilization` on CPU as a share of the host's whole memory, and
refuses to start unless that much is free: with the default 0.9, any other process on a
laptop stops it, and in a pod the share is of the node, not of the pod's limit. So on CPU the
server passes `--kv-cache-memory-bytes` instead: `cpu_kv_cache_bytes` when set, else a
default derived from the cgroup memory limit (kuberank_contract.default_cpu_kv_cache_bytes),
and checks before any engine process starts that the cache fits in the memory free now.
"""

from __future__ import annotations

from pathlib import Path

from kuberank_contract import default_cpu_kv_cache_bytes, env_var
from kuberank_server.engine import EngineConfigurationError
from kuberank_server.runtime.settings import ServerSettings

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number.
CGROUP_V1_UNLIMITED = 1 << 62


class CpuKVCacheDoesNotFit(EngineConfigurationError):
    """The CPU KV cache asked for is larger than the memory free for it."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory(root: Path = CGROUP_ROOT) -> tuple[int | None, int | None]:
    """(limit, usage) in bytes of this process's memory cgroup; None where there is none."""
    if (root / "memory.max").exists():  # cgroup v2 ("max" reads as no limit)
        return _read_int(root / "memory.max"), _read_int(root / "memory.current")
    limit = _read_int(root / "memory" / "memory.limit_in_bytes")
    if limit is not None and limit >= CGROUP_V1_UNLIMITED:
        limit = None
    return limit, _read_int(root / "memory" / "memory.usage_in_bytes")


def host_available_bytes(meminfo: Path = MEMINFO) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{meminfo} has no MemAvailable line")


def available_bytes(root: Path = CGROUP_ROOT, meminfo: Path = MEMINFO) -> int:
    """Memory this process can still take: the host's free memory, within the cgroup's limit."""
    available = host_available_bytes(meminfo)
    limit, usage = cgroup_memory(root)
    if limit is not None:
        available = min(available, limit - (usage or 0))
    return available


def cpu_kv_cache_bytes(settings: ServerSettings, root: Path = CGROUP_ROOT) -> int:
    if settings.cpu_kv_cache_bytes is not None:
        return settings.cpu_kv_cache_bytes
    return default_cpu_kv_cache_bytes(cgroup_memory(root)[0])


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.2f} GiB"


def check_cpu_kv_cache_fits(
    kv_cache_bytes: int, root: Path = CGROUP_ROOT, meminfo: Path = MEMINFO
) -> None:
    available = available_bytes(root, meminfo)
    if kv_cache_bytes > available:
        limit = cgroup_memory(root)[0]
        within = f" within the container's {_gib(limit)} limit" if limit is not None else ""
        raise CpuKVCacheDoesNotFit(
            f"the CPU KV cache of {_gib(kv_cache_bytes)} does not fit: {_gib(available)} of "
            f"memory is free{within}. Set --cpu-kv-cache-bytes ({env_var('cpu_kv_cache_bytes')}"
            ", spec.engine.cpuKvCacheSize in a RerankerService) lower, or free memory"
        )
