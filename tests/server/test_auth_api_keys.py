"""The API-key matrix over real HTTP against the real app (MiniLM engine, every middleware):
valid, unknown, revoked, added, expired, missing scope, over its own rate, as Bearer and as
X-API-Key, beside JWTs on the same server; the official Cohere SDK and NVIDIA's NIM client
with a key; and no key ever in a log line, a metric, an error or the key file.

Keys come from the real `kuberank-server apikey create` command and reach the server as the
key Secret's file does; revocation replaces that file as kubelet does (a new file swapped in)
while the server keeps running.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client import generate_latest
from tests.server.api_key_support import (
    RecordingHandler,
    create_key,
    recording_logs,
    serving_over_http,
    write_key_file,
)
from tests.server.auth_support import assert_rejected
from tests.server.harness import (
    SECRET,
    SEED_DOCUMENTS,
    SEED_LAST_INDEX,
    SEED_QUERY,
    auth_headers,
    server_settings,
)

from kuberank_server.auth.api_keys import key_digest, new_api_key
from kuberank_server.engine.scorer import Scorer
from kuberank_server.http.app import create_app
from kuberank_server.observability.metrics import ServerMetrics

pytestmark = pytest.mark.engine

# The stated bound: a changed key file takes effect within api_keys_reload_seconds (plus
# kubelet's own delay in a cluster, which this file swap does not have).
RELOAD_SECONDS = 1.0
SEED = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}


@dataclass
class KeyedServer:
    url: str
    metrics: ServerMetrics
    key_file: Path
    entries: dict[str, Any]  # the key file as first written
    keys: dict[str, str]  # key name -> the key itself (what a client holds)
    logs: RecordingHandler
    responses: list[httpx.Response] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.AsyncClient:
        """A client whose every response is kept, to check none of them shows a key."""

        async def keep(response: httpx.Response) -> None:
            await response.aread()
            self.responses.append(response)

        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=60, event_hooks={"response": [keep]}
        )

    async def rerank(self, **headers: str) -> httpx.Response:
        async with self.client(**headers) as client:
            return await client.post("/v1/rerank", json=SEED)

    def failures(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "kuberank_auth_failures_total", {"reason": reason}
        )
        return value or 0.0

    def audit_record(self, response: httpx.Response) -> dict[str, Any]:
        request_id = response.headers["x-request-id"]
        mine = [r for r in self.logs.audit_records() if r.get("request_id") == request_id]
        assert len(mine) == 1, f"expected one audit record for {request_id}, got {mine}"
        return mine[0]


@pytest.fixture(scope="module")
async def keyed_server(
    minilm_scorer: Scorer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KeyedServer]:
    keys: dict[str, str] = {}
    entries: dict[str, Any] = {}
    for name, args in {
        "valid": ["--subject", "batch-job"],
        "revocable": ["--subject", "nightly"],
        "no-scope": ["--subject", "reader", "--scope", "search:read"],
        "expired": ["--subject", "old-job", "--expires", "1d"],
        "rated": ["--subject", "metered", "--rate", "0.2"],
    }.items():
        key, entry = create_key("--name", name, *args)
        keys[name] = key
        entries |= entry
    # As if the day had passed: the command refuses to make a key that is expired already.
    past = datetime.now(UTC) - timedelta(minutes=1)
    entries["expired"]["expires"] = past.isoformat().replace("+00:00", "Z")
    key_file = tmp_path_factory.mktemp("api-key-secret") / "apikeys.json"
    write_key_file(key_file, entries)
    settings = server_settings(
        auth_mode="jwtOrApiKey",
        api_keys_file=key_file,
        api_keys_reload_seconds=RELOAD_SECONDS,
        rate_limit_burst=2,
    )
    metrics = ServerMetrics()
    with recording_logs() as logs:
        app = create_app(settings, scorer=minilm_scorer, metrics=metrics)
        async with serving_over_http(app) as url:
            yield KeyedServer(url, metrics, key_file, entries, keys, logs)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ranking(response: httpx.Response) -> list[int]:
    return [result["index"] for result in response.json()["results"]]


@pytest.mark.parametrize(
    "present",
    [pytest.param(bearer, id="bearer"), pytest.param(lambda k: {"X-API-Key": k}, id="x-api-key")],
)
async def test_a_valid_key_reranks_as_its_subject_and_is_audited_by_name(
    keyed_server: KeyedServer, present: Callable[[str], dict[str, str]]
) -> None:
    response = await keyed_server.rerank(**present(keyed_server.keys["valid"]))

    assert response.status_code == 200, response.text
    assert ranking(response)[-1] == SEED_LAST_INDEX
    record = keyed_server.audit_record(response)
    assert record == {
        "log": "audit", "time": record["time"], "request_id": response.headers["x-request-id"],
        "method": "POST", "route": "/v1/rerank", "status": 200, "subject": "batch-job",
        "credential_type": "api_key", "credential_id": "valid", "auth_failure": None,
        "client": "127.0.0.1", "documents": 4, "latency_ms": record["latency_ms"],
    }  # fmt: skip
    assert datetime.fromisoformat(record["time"]).tzinfo is not None


async def test_a_jwt_and_a_key_are_both_accepted_on_one_server(keyed_server: KeyedServer) -> None:
    token_headers = auth_headers(subject="jwt-client")
    jti = jwt.decode(token_headers["Authorization"][7:], SECRET, algorithms=["HS256"])["jti"]

    by_token = await keyed_server.rerank(**token_headers)
    by_key = await keyed_server.rerank(**bearer(keyed_server.keys["valid"]))

    assert (by_token.status_code, by_key.status_code) == (200, 200)
    assert ranking(by_token) == ranking(by_key)
    token_record = keyed_server.audit_record(by_token)
    assert (token_record["subject"], token_record["credential_type"]) == ("jwt-client", "jwt")
    assert token_record["credential_id"] == jti


# (case, headers from the server's keys, status, error type, failure reason)
REJECTIONS: list[tuple[str, Callable[[dict[str, str]], dict[str, str]], int, str, str]] = [
    ("unknown key", lambda keys: bearer(new_api_key()), 401, "authentication_error",
     "unknown_api_key"),
    ("unknown X-API-Key", lambda keys: {"X-API-Key": new_api_key()}, 401,
     "authentication_error", "unknown_api_key"),
    ("expired", lambda keys: bearer(keys["expired"]), 401, "authentication_error",
     "api_key_expired"),
    ("missing scope", lambda keys: {"X-API-Key": keys["no-scope"]}, 403, "permission_error",
     "missing_scope"),
    ("key and token at once", lambda keys: {"X-API-Key": keys["valid"], **auth_headers()}, 401,
     "authentication_error", "malformed_header"),
    ("no credential", lambda keys: {}, 401, "authentication_error", "missing_token"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status", "error_type", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS],
)
async def test_a_bad_key_is_refused_counted_and_audited(
    keyed_server: KeyedServer,
    headers: Callable[[dict[str, str]], dict[str, str]],
    status: int,
    error_type: str,
    reason: str,
) -> None:
    before = keyed_server.failures(reason)

    response = await keyed_server.rerank(**headers(keyed_server.keys))

    assert_rejected(response, status=status, error_type=error_type)
    assert keyed_server.failures(reason) == before + 1
    record = keyed_server.audit_record(response)
    assert (record["status"], record["auth_failure"]) == (status, reason)
    assert record["documents"] is None  # refused before the body was looked at


async def test_a_missing_scope_is_refused_but_the_audit_names_who(
    keyed_server: KeyedServer,
) -> None:
    response = await keyed_server.rerank(**bearer(keyed_server.keys["no-scope"]))

    assert "rerank" in response.json()["error"]["message"]
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    record = keyed_server.audit_record(response)
    assert (record["subject"], record["credential_id"]) == ("reader", "no-scope")


async def test_a_key_with_its_own_rate_gets_429_past_it_and_others_carry_on(
    keyed_server: KeyedServer,
) -> None:
    rated = [await keyed_server.rerank(**bearer(keyed_server.keys["rated"])) for _ in range(3)]
    other = await keyed_server.rerank(**bearer(keyed_server.keys["valid"]))

    assert [r.status_code for r in rated] == [200, 200, 429]  # burst 2, then 0.2/s
    assert_rejected(rated[2], status=429, error_type="rate_limit_error")
    assert "API key" in rated[2].json()["error"]["message"]
    assert 4 <= int(rated[2].headers["Retry-After"]) <= 5
    assert other.status_code == 200
    assert keyed_server.audit_record(rated[2])["auth_failure"] == "rate_limited"


async def test_revoked_and_added_keys_take_effect_within_the_reload_interval_without_restart(
    keyed_server: KeyedServer,
) -> None:
    added_key, added_entry = create_key("--subject", "new-team", "--name", "added")
    assert (await keyed_server.rerank(**bearer(keyed_server.keys["revocable"]))).status_code == 200
    assert (await keyed_server.rerank(**bearer(added_key))).status_code == 401
    revised = {n: e for n, e in keyed_server.entries.items() if n != "revocable"} | added_entry

    write_key_file(keyed_server.key_file, revised)
    changed_at = time.monotonic()
    # (seconds after the change the probe was sent, revoked key refused, added key accepted);
    # GET /v1/models checks the credential without scoring, so probes are quick and many.
    probes: list[tuple[float, bool, bool]] = []
    async with keyed_server.client() as client:
        while time.monotonic() - changed_at < RELOAD_SECONDS + 3:
            sent_at = time.monotonic() - changed_at
            revoked = await client.get("/v1/models", headers=bearer(keyed_server.keys["revocable"]))
            added = await client.get("/v1/models", headers=bearer(added_key))
            probes.append((sent_at, revoked.status_code == 401, added.status_code == 200))
            await asyncio.sleep(0.05)

    late = [probe for probe in probes if probe[0] > RELOAD_SECONDS]
    assert late, "no probe was sent after the reload interval: the test would prove nothing"
    assert all(refused and accepted for _, refused, accepted in late), probes
    assert revoked.json()["error"]["message"] == "API key is not valid"
    assert (await keyed_server.rerank(**bearer(keyed_server.keys["valid"]))).status_code == 200
    keyed_server.keys["added"] = added_key
    assert "added: added; removed: revocable" in keyed_server.logs.text()


async def test_a_broken_key_file_keeps_the_keys_loaded_before(keyed_server: KeyedServer) -> None:
    text = keyed_server.key_file.read_text()
    keyed_server.key_file.write_text(text[: len(text) // 2])  # a half-written file
    await asyncio.sleep(RELOAD_SECONDS + 0.2)

    response = await keyed_server.rerank(**bearer(keyed_server.keys["valid"]))

    assert response.status_code == 200
    assert "keeping the" in keyed_server.logs.text()
    write_key_file(keyed_server.key_file, json.loads(text))


async def test_the_official_cohere_sdk_works_with_an_api_key(keyed_server: KeyedServer) -> None:
    import cohere

    client = cohere.ClientV2(api_key=keyed_server.keys["valid"], base_url=keyed_server.url)
    response = await asyncio.to_thread(
        client.rerank, model="rerank-v3.5", query=SEED_QUERY, documents=SEED_DOCUMENTS
    )
    assert [result.index for result in response.results][-1] == SEED_LAST_INDEX

    refused = cohere.ClientV2(api_key=new_api_key(), base_url=keyed_server.url)
    with pytest.raises(cohere.errors.UnauthorizedError):
        await asyncio.to_thread(
            refused.rerank, model="rerank-v3.5", query=SEED_QUERY, documents=SEED_DOCUMENTS
        )


async def test_nvidias_nim_client_works_with_an_api_key(keyed_server: KeyedServer) -> None:
    """langchain-nvidia-ai-endpoints' NVIDIARerank, pointed at the server as at a self-hosted
    NIM (`base_url` .../v1; it posts NIM's /v1/ranking body with the key as a bearer)."""
    from langchain_core.documents import Document
    from langchain_nvidia_ai_endpoints import NVIDIARerank

    def rerank(key: str) -> list[Document]:
        client = NVIDIARerank(
            base_url=f"{keyed_server.url}/v1",
            api_key=key,
            model="nvidia/nv-rerankqa-mistral-4b-v3",
            top_n=len(SEED_DOCUMENTS),
        )
        documents = [Document(page_content=text) for text in SEED_DOCUMENTS]
        return list(client.compress_documents(documents, SEED_QUERY))

    ranked = await asyncio.to_thread(rerank, keyed_server.keys["valid"])
    assert ranked[-1].page_content == SEED_DOCUMENTS[SEED_LAST_INDEX]
    scores = [document.metadata["relevance_score"] for document in ranked]
    assert scores == sorted(scores, reverse=True)

    with pytest.raises(Exception, match="401"):
        await asyncio.to_thread(rerank, new_api_key())


async def test_no_key_is_ever_in_a_log_line_a_metric_an_error_or_the_key_file(
    keyed_server: KeyedServer,
) -> None:
    """Runs last in this module: everything the tests above sent is on record by now."""
    keys = list(keyed_server.keys.values())
    assert len(keyed_server.responses) >= 20 and keyed_server.logs.records
    logged = keyed_server.logs.text()
    exposed = generate_latest(keyed_server.metrics.registry).decode()
    answered = "\n".join(
        f"{response.headers!r} {response.text}" for response in keyed_server.responses
    )
    on_disk = keyed_server.key_file.read_text()
    for key in keys:
        secret_part = key.removeprefix("kr_")
        for where, text in {"logs": logged, "metrics": exposed, "responses": answered,
                            "key file": on_disk}.items():  # fmt: skip
            assert secret_part not in text, f"an API key shows in the {where}"
    for name in ("valid", "no-scope", "expired", "rated"):  # still in the file: as hashes
        assert key_digest(keyed_server.keys[name]) in on_disk
    # The audit trail carries neither the query nor a document's text.
    audit_text = json.dumps(keyed_server.logs.audit_records())
    assert SEED_QUERY not in audit_text
    assert not any(document in audit_text for document in SEED_DOCUMENTS)
