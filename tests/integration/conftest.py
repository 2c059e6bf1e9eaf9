"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import Namespaces


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Network namespaces for one test, removed when it ends."""
    made = Namespaces()
    yield made
    made.cleanup()
