"""Fixtures for the playground UI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.ui.stand_in import StandInServer, serve_stand_in


@pytest.fixture
def stand_in_server() -> Iterator[StandInServer]:
    """A loopback HTTP server answering what the test scripts (see `tests.ui.stand_in`)."""
    with serve_stand_in() as stand_in:
        yield stand_in
