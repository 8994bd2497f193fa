"""Two GPUs in one server, for real: the embedded model sharded over both (tensor) and one
replica per GPU (data) rank the seed example as one device does. Needs two NVIDIA GPUs."""

from __future__ import annotations

import subprocess

import pytest
from tests.server.harness import SEED_DOCUMENTS, SEED_LAST_INDEX, SEED_QUERY, server_settings

from kuberank_server.engine.prompts import TokenLimits
from kuberank_server.engine.scorer import Scorer

pytestmark = [pytest.mark.gpu, pytest.mark.engine]


def _gpu_count() -> int:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return len(listing.stdout.splitlines()) if listing.returncode == 0 else 0


@pytest.mark.parametrize("parallelism", ["tensor", "data"])
async def test_two_gpus_rank_the_seed_example_as_one_device_does(parallelism: str) -> None:
    if _gpu_count() < 2:
        pytest.skip("needs two NVIDIA GPUs")
    scorer = await Scorer.start(server_settings(gpus=2, parallelism=parallelism))
    try:
        assert scorer.engine.vllm_config.parallel_config.world_size_across_dp == 2
        scores = await scorer.score(
            SEED_QUERY,
            SEED_DOCUMENTS,
            instruction="",
            limits=TokenLimits(2048, 4096, True),
            request_id=f"two-gpus-{parallelism}",
        )
    finally:
        scorer.shutdown()
    ranking = sorted(range(len(SEED_DOCUMENTS)), key=lambda i: -scores.relevance[i])
    assert ranking[-1] == SEED_LAST_INDEX
    assert scores.relevance == pytest.approx([0.640, 0.278, 0.274, 0.453], abs=0.01)
