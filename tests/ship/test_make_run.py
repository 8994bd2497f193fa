"""README's first command: `make run` serves, and the curl it prints returns the seed example
ranked (the third document, the odd one out, last). The README's client examples (curl,
httpx, the Cohere SDK) then run, as printed there, against that same server.

`make run` is run as a newcomer runs it (its set-up already done, so `-o` skips re-checking
it), on free ports through the `KUBERANK_*` variables the server reads, with a real engine.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import engine_test_env, free_port, memory_held_by_another_process

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 300
# What a newcomer's laptop has in use besides (a browser, an editor): vLLM's CPU backend used
# to refuse to start unless 90 % of the machine's memory was free.
MEMORY_HELD_ELSEWHERE_BYTES = 6 << 30


@pytest.fixture(scope="module")
def printed_curl(artifacts_dir: Path) -> Iterator[str]:
    """Start `make run` while another process holds 6 GiB, and yield the curl command line it
    prints once ready."""
    env = engine_test_env() | {
        "KUBERANK_PORT": str(free_port()),
        "KUBERANK_METRICS_PORT": str(free_port()),
    }
    env.pop("KUBERANK_JWT_SECRET", None)  # `--dev` mints its own key, as for a newcomer
    with memory_held_by_another_process(MEMORY_HELD_ELSEWHERE_BYTES):
        process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # one process group: make and the server stop together
        )
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        log_path = artifacts_dir / "make-run.log"

        def pump(stdout: Iterator[str]) -> None:
            with log_path.open("w") as log:
                for line in stdout:
                    log.write(line)
                    log.flush()
                    lines.put(line)

        threading.Thread(target=pump, args=(process.stdout,), daemon=True).start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or process.poll() is not None:
                    pytest.fail(f"`make run` printed no curl (see {log_path}):\n"
                                + log_path.read_text()[-3000:])  # fmt: skip
                try:
                    line = lines.get(timeout=min(remaining, 1))
                except queue.Empty:
                    continue
                if line.startswith("curl "):
                    yield line.strip()
                    return
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _run_in_bash(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


@pytest.mark.engine
def test_the_printed_curl_ranks_the_seed_example_third_document_last(printed_curl: str) -> None:
    result = _run_in_bash(printed_curl)

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    ranking = [item["index"] for item in body["results"]]
    scores = [item["relevance_score"] for item in body["results"]]
    assert sorted(ranking) == [0, 1, 2, 3]
    assert ranking[-1] == 2, f"the third document should rank last: {body}"
    assert scores == sorted(scores, reverse=True)


@pytest.mark.engine
def test_the_printed_curl_works_because_of_its_token(printed_curl: str) -> None:
    assert "Authorization: Bearer " in printed_curl
    without_token = printed_curl.replace("-H 'Authorization: Bearer ", "-H 'X-Dropped: ")
    assert without_token != printed_curl
    result = _run_in_bash(without_token + " -o /dev/null -w '%{http_code}'")
    assert result.stdout == "401"


def _readme_examples(language: str) -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Calling it from a service\n(.*?)^## ", readme, re.M | re.S)
    assert section, "README.md has no 'Calling it from a service' section"
    return re.findall(rf"^```{language}\n(.*?)^```", section.group(1), re.M | re.S)


def _client_env(printed_curl: str) -> dict[str, str]:
    """KUBERANK_URL and KUBERANK_TOKEN, as a reader of the README would set them."""
    words = shlex.split(printed_curl)
    url = next(word for word in words if word.startswith("http")).removesuffix("/v1/rerank")
    token = next(word for word in words if word.startswith("Authorization: Bearer "))
    return os.environ | {
        "KUBERANK_URL": url,
        "KUBERANK_TOKEN": token.removeprefix("Authorization: Bearer "),
    }


@pytest.mark.engine
def test_the_readme_python_examples_rank_the_relevant_document_first(printed_curl: str) -> None:
    examples = _readme_examples("python")
    assert len(examples) == 2  # httpx, the Cohere SDK
    for example in examples:
        result = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", example],
            env=_client_env(printed_curl),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{example}\n{result.stderr}"
        # top_n 1: one line, the index of "Add an index on the filtered column." (1)
        assert result.stdout.split()[0] == "1", result.stdout


@pytest.mark.engine
def test_the_readme_curl_example_ranks_the_relevant_document_first(printed_curl: str) -> None:
    (example,) = _readme_examples("sh")
    result = subprocess.run(["bash", "-c", example], env=_client_env(printed_curl),
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [item["index"] for item in json.loads(result.stdout)["results"]] == [0]
