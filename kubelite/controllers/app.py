"""`kubelite controller-manager`: run the registered controllers on shared informers, under leader election."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable

from kubelite.client.config import load_config
from kubelite.client.controller import Controller, run_controllers
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.leaderelection import LeaderElectionConfig, LeaderElector
from kubelite.client.rest import ApiClient
from kubelite.controllers import REGISTRY

log = logging.getLogger(__name__)
ControllerFactory = Callable[[ApiClient, SharedInformerFactory], Controller]


def selected(names: list[str]) -> list[str]:
    """Resolve kube-controller-manager's --controllers syntax: '*' for all, 'foo' to add, '-foo' to drop."""
    chosen: set[str] = set()
    for name in names or ["*"]:
        if name == "*":
            chosen |= set(REGISTRY)
        elif name.startswith("-"):
            chosen.discard(name[1:])
        elif name in REGISTRY:
            chosen.add(name)
        else:
            raise ValueError(f"unknown controller {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return sorted(chosen)


def load(name: str) -> ControllerFactory:
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


async def run_controller_manager(kubeconfig: str | None, controllers: list[str], leader_elect: bool = True) -> None:
    """Run until cancelled; with leader election only the lease holder runs controllers."""
    names = selected(controllers)
    factories = [load(name) for name in names]
    async with ApiClient(load_config(kubeconfig), qps=100, burst=200) as client:
        stop = asyncio.Event()

        async def lead() -> None:
            log.info("controller-manager running controllers: %s", ", ".join(names))
            await run_controllers(client, stop, factories)

        try:
            if leader_elect:
                elector = LeaderElector(client, LeaderElectionConfig(name="kube-controller-manager"))
                await elector.run(lead)
            else:
                await lead()
        finally:
            stop.set()
