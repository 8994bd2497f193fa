"""Where a request's CPU goes, ours against `vllm serve`: `python -m benchmarks.server_profile`.

Both servers as in `benchmarks.server_bench` (ours with JWT auth, vLLM's own server, the
embedded MiniLM on the CPU engine). For each profiled cell (1 x 1 and 32 x 1: one document per
request, where the request path is the largest share) and each server, py-spy samples the
server's API process (the engine's process is not ours) while the benchmark's closed-loop load
runs, and each sample is put in one layer: walking the sampled stack from the innermost frame
out, the first frame that belongs to a layer below (`LAYERS`) names it, so a library called by
a layer (json, logging, pydantic) is counted in that layer. The process's own CPU time over the
same load, per request, is split in the layers' shares of the samples: CPU microseconds per
request, per layer.

py-spy comes with the dev extra (beside this Python); `PY_SPY` names another binary.
It samples without pausing the process (`--nonblocking`). The last stdout line is one JSON
object: per server and cell, the API process's CPU per request and each layer's share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.server_bench import OURS, THEIRS, Load, both_running, cpu_seconds

# (callers, documents per request, requests): longer than the benchmark's rounds, for samples.
PROFILED_CELLS = ((1, 1, 400), (32, 1, 1200))
SAMPLES_PER_SECOND = 250
OTHER = "other (unattributed)"

# (layer, path fragment, function-name prefixes or None for any function in that path).
# Matched against each frame, innermost first; the first match names the sample's layer.
LAYERS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("metrics (prometheus_client)", "prometheus_client/", None),
    ("metrics (prometheus_fastapi_instrumentator)", "prometheus_fastapi_instrumentator/", None),
    ("tokenizer (transformers)", "transformers/", None),
    ("auth (credential, scope, rate)", "kuberank_server/auth/", None),
    ("audit record", "kuberank_server/observability/audit.py", None),
    ("request observer (id, route metrics, request log)", "kuberank_server/http/middleware.py",
     ("RequestObserver", "_client_request_id", "_write_suppressed_summary")),
    ("HEAD as GET", "kuberank_server/http/middleware.py", ("HeadAsGet",)),
    ("body guard (checks, body read, disconnect watch)", "kuberank_server/http/middleware.py",
     None),
    ("connection recycling", "kuberank_server/http/connections.py", None),
    ("HTTP limits protocol", "kuberank_server/http/http_limits.py", None),
    ("request ids, probes, error envelope", "kuberank_server/http/", None),
    ("admission (limiter, queue wait)", "kuberank_server/runtime/", None),
    ("prompts (ours)", "kuberank_server/engine/prompts.py", None),
    ("engine submit (ours)", "kuberank_server/engine/", None),
    ("route handler + scoring (ours)", "kuberank_server/rerank/", None),
    ("vLLM serving layer (entrypoints)", "vllm/entrypoints/", None),
    ("vLLM engine client (AsyncLLM, renderer, outputs)", "vllm/", None),
    ("JSON parse (request body)", "starlette/requests.py", ("Request.json", "Request.body")),
    ("validate (request body)", "fastapi/dependencies/utils.py",
     ("request_body_to_args", "_validate_value_with_model_field", "_get_multidict_value")),
    ("serialise (response)", "fastapi/routing.py", ("serialize_response",)),
    ("serialise (response)", "fastapi/encoders.py", None),
    ("serialise (response)", "starlette/responses.py", None),
    ("dependencies (FastAPI)", "fastapi/dependencies/", None),
    ("dependencies (FastAPI)", "fastapi/security/", None),
    ("FastAPI handler (rest)", "fastapi/", None),
    ("Starlette routing + middleware", "starlette/", None),
    ("uvicorn (HTTP protocol)", "uvicorn/", None),
    ("event loop (asyncio)", "asyncio/", None),
    ("event loop (asyncio)", "uvloop/", None),
)  # fmt: skip


@dataclass(frozen=True)
class Frame:
    function: str
    path: str


def parse_frame(text: str) -> Frame:
    """py-spy's `function (path:line)`."""
    function, _, location = text.rpartition(" (")
    return Frame(function, location.rsplit(":", 1)[0])


def layer_of(stack: list[Frame]) -> str:
    for frame in reversed(stack):
        for layer, fragment, functions in LAYERS:
            if fragment in frame.path and (
                functions is None or frame.function.startswith(functions)
            ):
                return layer
    return OTHER


def layer_samples(raw: str) -> Counter[str]:
    """Samples per layer from py-spy's raw output (`--threads`: `thread (id): name;frame;...
    count`, outermost frame first). Threads other than the event loop's are one layer each."""
    samples: Counter[str] = Counter()
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        thread, _, frames = stack_text.partition(";")
        name = thread.partition(": ")[2] or thread
        stack = [parse_frame(text) for text in frames.split(";") if text]
        layer = layer_of(stack) if name == "MainThread" else f"thread {name}"
        samples[layer] += int(count)
    return samples


def cpu_us_per_layer(
    samples: Counter[str], cpu_seconds_spent: float, requests: int
) -> dict[str, float]:
    """The process's CPU per request split in the layers' shares of the samples, in µs."""
    total = sum(samples.values())
    if not total:
        return {}
    per_request_us = cpu_seconds_spent / requests * 1e6
    return {
        layer: round(per_request_us * count / total, 1) for layer, count in samples.most_common()
    }


def py_spy() -> str:
    beside_python = Path(sys.executable).parent / "py-spy"  # the dev extra installs it there
    found = (
        os.environ.get("PY_SPY")
        or (str(beside_python) if beside_python.exists() else None)
        or shutil.which("py-spy")
    )
    if not found:
        raise SystemExit("py-spy not found: `pip install py-spy`, or set PY_SPY to its binary")
    return found


def profile_cell(
    load: Load, process: psutil.Process, concurrency: int, documents: int, requests: int,
    out_dir: Path,
) -> dict[str, object]:  # fmt: skip
    raw_path = out_dir / f"{load.server.name}-{concurrency}x{documents}.txt"
    sampler = subprocess.Popen(
        [py_spy(), "record", "--pid", str(process.pid), "--rate", str(SAMPLES_PER_SECOND),
         "--nonblocking", "--threads", "--format", "raw", "--output", str(raw_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(2)  # py-spy attaches
    before = cpu_seconds([process])
    started = time.perf_counter()
    _, errors, elapsed = asyncio.run(load.run(concurrency, documents, requests))
    spent = cpu_seconds([process]) - before
    sampler.send_signal(signal.SIGINT)
    sampler.wait(timeout=60)
    samples = layer_samples(raw_path.read_text())
    layers = cpu_us_per_layer(samples, spent, requests)
    print(f"\n{load.server.name}, {concurrency} x {documents}: {requests} requests in "
          f"{time.perf_counter() - started:.1f} s ({requests / elapsed:.1f}/s, {errors} errors), "
          f"API process CPU {spent / requests * 1e6:.0f} µs per request "
          f"({sum(samples.values())} samples)")  # fmt: skip
    for layer, us in layers.items():
        print(f"  {us:8.1f} µs  {layer}")
    return {
        "requests": requests,
        "errors": errors,
        "api_cpu_us_per_request": round(spent / requests * 1e6, 1),
        "samples": sum(samples.values()),
        "layers_us_per_request": layers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where py-spy's raw samples are kept")
    args = parser.parse_args()
    py_spy()  # fail before starting engines
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="kuberank-server-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    profile: dict[str, dict[str, object]] = {OURS: {}, THEIRS: {}}
    with both_running(out_dir) as sides:
        for concurrency, documents, requests in PROFILED_CELLS:
            for load, process in sides:
                profile[load.server.name][f"{concurrency}x{documents}"] = profile_cell(
                    load, process, concurrency, documents, requests, out_dir
                )
    print(f"samples and server logs in {out_dir}")
    print(json.dumps({"benchmark": "server_profile", "cpu_us_per_request": profile}))


if __name__ == "__main__":
    main()
