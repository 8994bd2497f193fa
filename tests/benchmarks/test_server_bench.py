"""The server benchmark's arithmetic and its CPU accounting, on real processes (no engine)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
from benchmarks.server_bench import (
    OURS,
    THEIRS,
    CellResult,
    Round,
    cpu_seconds,
    ratio_rounds,
    summarise,
    tree,
)


def _round(pairs_per_second: float, p50_ms: float, api_cpu: float) -> Round:
    return Round(pairs_per_second, p50_ms, p50_ms * 2, 0, 1.0, api_cpu, api_cpu * 3)


def test_ratios_pair_rounds_that_ran_back_to_back() -> None:
    ours = [_round(100, 10, 1.0), _round(50, 20, 1.0), _round(90, 11, 1.0)]
    theirs = [_round(80, 12, 2.0), _round(50, 20, 2.0), _round(100, 10, 2.0)]

    assert ratio_rounds(ours, theirs) == [1.25, 1.0, 0.9]

    cell = CellResult(1, 1, 100, throughput_ratio_rounds=ratio_rounds(ours, theirs))
    cell.sides = {OURS: summarise(ours, 100, 0.0), THEIRS: summarise(theirs, 100, 0.5)}
    figures = cell.as_json()
    assert figures["throughput_ratio"] == 1.0  # the median round, not the ratio of medians
    assert figures["throughput_ratio_range"] == [0.9, 1.25]
    assert figures[OURS]["p50_ms"] == 11
    # CPU per request: the median round's CPU seconds over the round's requests.
    assert figures[OURS]["api_cpu_seconds_per_request"] == 0.01
    assert figures[THEIRS]["cpu_seconds_per_request"] == 0.06


def test_cpu_seconds_count_the_engine_child_apart_from_the_api_process() -> None:
    # An idle parent whose child (as an engine process would) spins for half a second, then
    # stays alive, so that its CPU time is still readable.
    child = (
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
        "time.sleep(10)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])\n",
        ]
    )
    try:
        process = psutil.Process(parent.pid)
        members = tree(process)
        while len(members) < 2:
            members = tree(process)
        api_before, tree_before = cpu_seconds([process]), cpu_seconds(members)
        time.sleep(3)  # the spin is over even on a busy machine
        api_spent = cpu_seconds([process]) - api_before
        tree_spent = cpu_seconds(members) - tree_before
    finally:
        for member in reversed(tree(psutil.Process(parent.pid))):
            member.kill()
        parent.wait(timeout=10)

    assert api_spent < 0.1
    assert 0.3 < tree_spent < 1.0
