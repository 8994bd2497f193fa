"""`kuberank-server ui`: its flags, its lazy Gradio import, and its start-up failures."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from kuberank_server.commands.cli import build_parser


def run_cli(*code_or_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *code_or_args], capture_output=True, text=True, timeout=120, check=False
    )


def test_defaults_listen_on_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERANK_URL", raising=False)
    args = build_parser().parse_args(["ui"])

    assert (args.url, args.host, args.port) == ("http://127.0.0.1:8000", "127.0.0.1", 7860)
    assert callable(args.run)


def test_flags_and_kuberank_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERANK_URL", "http://from-env:8000")
    assert build_parser().parse_args(["ui"]).url == "http://from-env:8000"

    args = build_parser().parse_args(
        ["ui", "--url", "http://rerank:8000", "--host", "0.0.0.0", "--port", "9000"]
    )
    assert (args.url, args.host, args.port) == ("http://rerank:8000", "0.0.0.0", 9000)


def test_building_the_cli_does_not_import_gradio() -> None:
    probe = run_cli(
        "-c",
        "import sys; from kuberank_server.commands.cli import build_parser; build_parser(); "
        "print('gradio' in sys.modules)",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "False"


def test_the_cli_and_the_playground_client_do_not_import_vllm() -> None:
    # The UI shares the server's protocol models, which are plain pydantic.
    probe = run_cli(
        "-c",
        "import sys; from kuberank_server.commands.cli import build_parser; build_parser(); "
        "import kuberank_server.ui.client; print('vllm' in sys.modules)",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "False"


def test_missing_gradio_says_which_extra_to_install() -> None:
    # A None entry in sys.modules makes `import gradio` fail as if it were not installed.
    result = run_cli(
        "-c",
        "import sys; sys.modules['gradio'] = None; from kuberank_server.commands.cli import main; "
        "sys.exit(main(['ui']))",
    )
    assert result.returncode == 2
    assert "pip install 'kuberank[ui]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_taken_port_is_reported_in_the_commands_terms() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("-m", "kuberank_server.commands.cli", "ui", "--port", str(port))

    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Choose another --port" in result.stderr
    assert "Traceback" not in result.stderr
