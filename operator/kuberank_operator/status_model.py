"""A typed model of `RerankerService.status`: the CRD's status schema is generated from it.

The operator writes the status as plain dicts (status.py); these models say what the API
server accepts, and a test checks that what status.py writes fits them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kuberank_operator.spec import RESOURCE_MODEL_CONFIG


class StatusModel(BaseModel):
    model_config = RESOURCE_MODEL_CONFIG


class Condition(StatusModel):
    """One condition of the service."""

    type: str
    """Ready, Progressing or Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str | None = None
    """One CamelCase word for the cause (Ready, for pods that do not serve: Starting,
    Unschedulable, ImagePullFailed, CrashLooping)."""
    message: str | None = None
    """What happened and what to do about it."""
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    """When the status last changed."""
    observed_generation: int | None = None
    """The metadata.generation the condition was computed from."""


class RerankerServiceStatus(StatusModel):
    """What the operator observed; written by the operator only."""

    observed_generation: int | None = None
    """The metadata.generation of the spec this status describes."""
    conditions: list[Condition] | None = Field(
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, Progressing and Degraded, each with a reason and a message a person can act on."""
    replicas: int | None = None
    """Server pods that exist."""
    ready_replicas: int | None = None
    """Server pods that pass their readiness probe."""
    desired_replicas: int | None = None
    """Server pods wanted now: by the autoscaler's HPA when autoscaling (ours, or the one KEDA
    makes for our ScaledObject), else spec.replicas."""
    endpoint: str | None = None
    """In-cluster URL of the rerank API."""
    model: str | None = None
    """The model the pods serve."""
