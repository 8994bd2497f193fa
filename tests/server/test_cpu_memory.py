"""The CPU KV cache in bytes: its default from the cgroup memory limit, the check that it fits,
and the one short message when it does not (kuberank_server.engine.cpu_memory)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.support import engine_test_env, free_port

from kuberank_contract import CPU_KV_CACHE_BYTES_WITHOUT_LIMIT, default_cpu_kv_cache_bytes
from kuberank_server.engine import EngineConfigurationError
from kuberank_server.engine.cpu_memory import (
    CpuKVCacheDoesNotFit,
    available_bytes,
    cgroup_memory,
    check_cpu_kv_cache_fits,
    cpu_kv_cache_bytes,
)
from kuberank_server.engine.scorer import build_engine_args, choose_model
from kuberank_server.runtime.settings import ServerSettings

GIB = 1 << 30
REPO_ROOT = Path(__file__).resolve().parents[2]


def _cgroup_v2(root: Path, limit: str, usage: int) -> Path:
    root.mkdir()
    (root / "memory.max").write_text(f"{limit}\n")
    (root / "memory.current").write_text(f"{usage}\n")
    return root


def _cgroup_v1(root: Path, limit: int, usage: int) -> Path:
    (root / "memory").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (root / "memory" / "memory.usage_in_bytes").write_text(f"{usage}\n")
    return root


def _meminfo(path: Path, available: int) -> Path:
    path.write_text(
        f"MemTotal:       {64 * GIB // 1024} kB\nMemAvailable:   {available // 1024} kB\n"
    )
    return path


def test_cgroup_v2_limit_and_usage(tmp_path: Path) -> None:
    assert cgroup_memory(_cgroup_v2(tmp_path / "cg", str(4 * GIB), GIB)) == (4 * GIB, GIB)


def test_cgroup_v2_without_a_limit(tmp_path: Path) -> None:
    assert cgroup_memory(_cgroup_v2(tmp_path / "cg", "max", GIB)) == (None, GIB)


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path: Path) -> None:
    assert cgroup_memory(_cgroup_v1(tmp_path / "a", 2 * GIB, GIB)) == (2 * GIB, GIB)
    unlimited = 9223372036854771712  # what this machine's own cgroup v1 reads
    assert cgroup_memory(_cgroup_v1(tmp_path / "b", unlimited, GIB)) == (None, GIB)


def test_no_memory_cgroup_at_all(tmp_path: Path) -> None:
    assert cgroup_memory(tmp_path) == (None, None)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(4 * GIB, GIB), (16 * GIB, 4 * GIB), (GIB // 2, GIB // 8), (None, 1 * GIB)],
)
def test_default_is_a_quarter_of_the_limit_or_a_fixed_size_without_one(
    tmp_path: Path, limit: int | None, expected: int
) -> None:
    root = _cgroup_v2(tmp_path / "cg", str(limit) if limit else "max", 0)
    assert cpu_kv_cache_bytes(ServerSettings(), root) == expected
    assert default_cpu_kv_cache_bytes(limit) == expected


def test_the_setting_wins_over_the_default(tmp_path: Path) -> None:
    root = _cgroup_v2(tmp_path / "cg", str(4 * GIB), 0)
    assert cpu_kv_cache_bytes(ServerSettings(cpu_kv_cache_bytes=3 * GIB), root) == 3 * GIB


def test_available_memory_is_bounded_by_the_cgroup(tmp_path: Path) -> None:
    meminfo = _meminfo(tmp_path / "meminfo", 20 * GIB)
    root = _cgroup_v2(tmp_path / "cg", str(4 * GIB), 3 * GIB)
    assert available_bytes(root, meminfo) == GIB
    assert available_bytes(tmp_path / "none", meminfo) == 20 * GIB


def test_a_cache_that_does_not_fit_names_the_setting_and_the_numbers(tmp_path: Path) -> None:
    meminfo = _meminfo(tmp_path / "meminfo", 20 * GIB)
    root = _cgroup_v2(tmp_path / "cg", str(4 * GIB), int(3.5 * GIB))
    with pytest.raises(CpuKVCacheDoesNotFit) as caught:
        check_cpu_kv_cache_fits(GIB, root, meminfo)
    assert isinstance(caught.value, EngineConfigurationError)
    message = str(caught.value)
    assert "the CPU KV cache of 1.00 GiB does not fit: 0.50 GiB" in message
    assert "within the container's 4.00 GiB limit" in message
    assert "--cpu-kv-cache-bytes (KUBERANK_CPU_KV_CACHE_BYTES" in message
    check_cpu_kv_cache_fits(GIB // 4, root, meminfo)  # a quarter GiB fits


def test_on_cpu_the_engine_gets_the_cache_in_bytes_not_a_share_of_the_host() -> None:
    settings = ServerSettings(gpu_memory_utilization=0.9)
    args = build_engine_args(settings, choose_model(settings), cpu_kv_cache_bytes=GIB)
    assert args.kv_cache_memory_bytes == GIB
    on_gpu = build_engine_args(settings, choose_model(settings))
    assert on_gpu.kv_cache_memory_bytes is None
    assert on_gpu.gpu_memory_utilization == 0.9


def test_the_fallback_size_is_a_modest_one() -> None:
    assert CPU_KV_CACHE_BYTES_WITHOUT_LIMIT == GIB


def test_serve_with_a_cache_larger_than_memory_exits_with_one_short_message(
    tmp_path: Path,
) -> None:
    """The whole command, as a user runs it: exit 1 before any engine process starts, one
    line that says what to change, no traceback, and the reason in the termination file."""
    message_file = tmp_path / "termination-log"
    huge = 1 << 50  # 1 PiB
    env = engine_test_env() | {"KUBERANK_JWT_SECRET": "cpu-memory-test-secret-0123456789abcdef"}
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "kuberank-server"), "serve",
         "--cpu-kv-cache-bytes", str(huge), "--host", "127.0.0.1", "--port", str(free_port()),
         "--metrics-port", "0", "--termination-message-file", str(message_file)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "the CPU KV cache of 1048576.00 GiB does not fit" in output
    assert "--cpu-kv-cache-bytes" in output
    errors = [line for line in output.splitlines() if " ERROR " in line or "CRITICAL" in line]
    assert len(errors) == 1, output
    assert "does not fit" in message_file.read_text()
