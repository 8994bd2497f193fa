"""The request log: probes (`/health`, `/ready`, every few seconds per pod from the kubelet)
stay out of it unless `log_probes` asks for them; API requests are always in it."""

from __future__ import annotations

import json

import pytest
from tests.server.harness import SEED_DOCUMENTS, SEED_QUERY, serving

from kuberank_server.engine.scorer import Scorer

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(("log_probes", "logged_routes"), [
    (False, ["/v1/rerank"]),
    (True, ["/health", "/ready", "/v1/rerank"]),
])  # fmt: skip
async def test_probes_are_logged_only_when_asked(
    minilm_scorer: Scorer,
    caplog: pytest.LogCaptureFixture,
    log_probes: bool,
    logged_routes: list[str],
) -> None:
    async with serving(minilm_scorer, log_probes=log_probes) as (_, client):
        caplog.clear()
        with caplog.at_level("INFO", logger="kuberank_server.requests"):
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 200
            body = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}
            assert (await client.post("/v1/rerank", json=body)).status_code == 200
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == "kuberank_server.requests"]  # fmt: skip
    assert [line["route"] for line in lines] == logged_routes
