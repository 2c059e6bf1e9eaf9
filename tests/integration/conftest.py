"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from kubelite.client import ApiClient, load_kubeconfig
from tests.e2e.conftest import API_ONLY, Cluster, free_port, start_server, stop_server
from tests.netns import Namespaces


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Network namespaces for one test, removed when it ends."""
    made = Namespaces()
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The API server alone, one per test module: no second copy of the controllers may race the ones under
    test."""
    running = start_server(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), free_port(),
                           *API_ONLY)
    yield running
    stop_server(running)


@pytest.fixture
async def client(server: Cluster) -> AsyncIterator[ApiClient]:
    """A client of that API server."""
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as api:
        yield api
