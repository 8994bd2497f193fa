"""Fixtures of the benchmarks' tests: the real control plane's (`kube`, from
tests/operator/real_cluster.py), for the autoscaling benchmark's stand-ins."""

from __future__ import annotations

from tests.operator.real_cluster import kube, reranker_crd

__all__ = ["kube", "reranker_crd"]
