"""`kuberank-server serve` flags: generated from the settings, overriding the environment."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jwt
import pytest
from tests.support import free_port

from kuberank_contract import AUTH_MODES, DTYPES, env_var
from kuberank_server.commands.cli import build_parser, main
from kuberank_server.commands.dev_mode import dev_curl
from kuberank_server.commands.serve_command import EXIT_ENGINE_FAILED, serve_settings
from kuberank_server.runtime.lifecycle import (
    TERMINATION_MESSAGE_MAX_BYTES,
    write_termination_message,
)
from kuberank_server.runtime.settings import ServerSettings
from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY


def parse(*argv: str) -> ServerSettings:
    return serve_settings(build_parser().parse_args(["serve", *argv]))


def test_every_setting_but_the_secret_is_a_flag() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {option for action in serve._actions for option in action.option_strings}
    for name in ServerSettings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert (flag in flags) == (name != "jwt_secret"), name


def _help_of_each_flag() -> dict[str, str]:
    """`serve --help` as printed, one entry per flag: its help text with the lines joined."""
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help().split("options:", 1)[1]
    entries = re.split(r"\n  (?=--)", text)
    return {
        entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries if entry.strip()
    }


def test_every_flag_says_what_it_does_its_default_and_its_variable() -> None:
    helps = _help_of_each_flag()
    for name, field in ServerSettings.model_fields.items():
        if name == "jwt_secret":
            continue
        flag = "--" + name.replace("_", "-")
        shown = helps[flag]
        words_beyond_the_flag = shown.replace(flag, "").replace(name.upper(), "")
        assert len(words_beyond_the_flag.split()) > 6, f"{flag} says nothing: {shown!r}"
        assert f"env {env_var(name)})" in shown, shown
        assert "(default: " in shown, shown
        assert field.description and field.description.split()[0] in shown, shown


def test_enum_flags_list_their_choices_and_refuse_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    helps = _help_of_each_flag()
    assert helps["--auth-mode"].startswith("--auth-mode {" + ",".join(AUTH_MODES) + "}")
    assert helps["--dtype"].startswith("--dtype {" + ",".join(DTYPES) + "}")
    assert "(default: 0.9;" in helps["--gpu-memory-utilization"]
    assert "(default: unset;" in helps["--cpu-kv-cache-bytes"]
    with pytest.raises(SystemExit):
        parse("--auth-mode", "jtw")
    assert "invalid choice: 'jtw'" in capsys.readouterr().err


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERANK_MAX_DOCUMENTS", "5")
    monkeypatch.setenv("KUBERANK_TRUNCATE", "true")
    monkeypatch.setenv("KUBERANK_PORT", "8100")
    settings = parse(
        "--max-documents", "7", "--no-truncate", "--jwt-algorithms", '["RS256", "ES256"]'
    )
    assert (settings.max_documents, settings.truncate, settings.port) == (7, False, 8100)
    assert settings.jwt_algorithms == ["RS256", "ES256"]


def test_invalid_flag_value_exits_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-documents", "zero"]) == 2
    assert "max_documents" in capsys.readouterr().err


def test_dev_mode_binds_loopback_with_a_fresh_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERANK_JWT_SECRET", raising=False)
    first, second = parse("--dev", "--host", "0.0.0.0"), parse("--dev")
    assert first.host == "127.0.0.1"
    assert first.auth_mode == "jwt" and first.jwt_secret is not None
    assert second.jwt_secret is not None
    assert first.jwt_secret.get_secret_value() != second.jwt_secret.get_secret_value()
    monkeypatch.setenv("KUBERANK_JWT_SECRET", "configured-secret-0123456789abcdef0123")
    assert parse("--dev").jwt_secret.get_secret_value() == (  # type: ignore[union-attr]
        "configured-secret-0123456789abcdef0123"
    )


def test_dev_curl_is_the_seed_example_with_a_valid_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERANK_JWT_SECRET", raising=False)
    settings = parse("--dev")
    printed = dev_curl(settings, "http://127.0.0.1:8000")
    command = next(line for line in printed.splitlines() if line.startswith("curl "))
    words = shlex.split(command)
    assert "http://127.0.0.1:8000/v1/rerank" in words
    token = next(w for w in words if w.startswith("Authorization: Bearer ")).split()[-1]
    assert settings.jwt_secret is not None
    claims = jwt.decode(token, settings.jwt_secret.get_secret_value(), algorithms=["HS256"])
    assert claims["scope"] == "rerank"
    body = words[words.index("-d") + 1]
    assert EXAMPLE_QUERY in body and all(document in body for document in EXAMPLE_DOCUMENTS)


def test_a_model_that_cannot_be_split_exits_with_the_reason_for_kubernetes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole serve path, as in a pod: the embedded model's 12 attention heads over 5 GPUs
    fails at start (before any engine process), the process exits 1, and the reason is in the
    termination message file, where the kubelet picks it up for the pod's status."""
    monkeypatch.setenv("KUBERANK_JWT_SECRET", "serve-command-test-secret-0123456789abcdef")
    message_file = tmp_path / "termination-log"
    exit_code = main(
        ["serve", "--gpus", "5", "--parallelism", "tensor", "--host", "127.0.0.1",
         "--port", str(free_port()), "--metrics-port", "0",
         "--termination-message-file", str(message_file)]
    )  # fmt: skip
    assert exit_code == EXIT_ENGINE_FAILED
    message = message_file.read_text()
    assert message.startswith("the engine failed to start: tensor parallelism cannot shard model")
    assert "12 attention heads are not divisible by 5" in message
    assert "GPU counts that work for tensor parallelism: 2, 3, 4, 6, 12;" in message


def test_the_termination_message_is_cut_to_what_kubernetes_keeps(tmp_path: Path) -> None:
    message_file = tmp_path / "termination-log"
    write_termination_message(message_file, "é" * 3000)  # 6000 bytes
    written = message_file.read_bytes()
    assert len(written) <= TERMINATION_MESSAGE_MAX_BYTES and written.decode() == "é" * 2048
    write_termination_message(tmp_path / "no-such-dir" / "log", "reason")  # logged, not raised
    write_termination_message(None, "reason")  # outside Kubernetes: nowhere to write
