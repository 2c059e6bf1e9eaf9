"""The scheduler process: API client, informers feeding the scheduler, event recorders and leader election."""

from __future__ import annotations

import asyncio
import logging

from kubelite.client.config import load_config
from kubelite.client.events import EventRecorder
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.leaderelection import LeaderElectionConfig, LeaderElector
from kubelite.client.resources import (
    NAMESPACES,
    NODES,
    PERSISTENTVOLUMECLAIMS,
    PERSISTENTVOLUMES,
    PODDISRUPTIONBUDGETS,
    PODS,
    REPLICASETS,
    REPLICATIONCONTROLLERS,
    SERVICES,
    STATEFULSETS,
    STORAGECLASSES,
)
from kubelite.client.rest import ApiClient
from kubelite.scheduler.config import load_config as load_scheduler_config
from kubelite.scheduler.framework import Listers
from kubelite.scheduler.scheduler import Scheduler

log = logging.getLogger(__name__)

POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
"""Finished pods hold no resources: upstream's scheduler does not watch them."""
LISTER_RESOURCES = {
    "namespaces": NAMESPACES,
    "services": SERVICES,
    "replicationcontrollers": REPLICATIONCONTROLLERS,
    "replicasets": REPLICASETS,
    "statefulsets": STATEFULSETS,
    "poddisruptionbudgets": PODDISRUPTIONBUDGETS,
    "persistentvolumeclaims": PERSISTENTVOLUMECLAIMS,
    "persistentvolumes": PERSISTENTVOLUMES,
    "storageclasses": STORAGECLASSES,
}


class LeadershipLost(RuntimeError):
    """This scheduler stopped renewing its Lease; the process must end so a fresh one can campaign."""


async def run_scheduler(kubeconfig: str, config_file: str | None, leader_elect: bool) -> None:
    """Run the scheduler until cancelled (or until leadership is lost, which raises LeadershipLost)."""
    config = load_scheduler_config(config_file)
    client = ApiClient(load_config(kubeconfig), qps=config.qps, burst=config.burst)
    recorders = {p.scheduler_name: EventRecorder(client, p.scheduler_name) for p in config.profiles}
    factory = SharedInformerFactory(client)
    pods = factory.informer(PODS, field_selector=POD_FIELD_SELECTOR)
    nodes = factory.informer(NODES)
    informers = {name: factory.informer(resource) for name, resource in LISTER_RESOURCES.items()}
    listers = Listers({name: informer.store for name, informer in informers.items()})
    scheduler = Scheduler(config, client, recorders=recorders, listers=listers,
                          pod_lookup=pods.store.get)
    for name, informer in informers.items():
        handlers = scheduler.resource_handlers(LISTER_RESOURCES[name].kind)
        if handlers is not None:
            informer.add_handlers(*handlers)
    nodes.add_handlers(scheduler.on_node_add, scheduler.on_node_update, scheduler.on_node_delete)
    pods.add_handlers(scheduler.on_pod_add, scheduler.on_pod_update, scheduler.on_pod_delete)
    try:
        factory.start()
        await factory.wait_for_sync()
        log.info("scheduler caches synced: %d nodes, %d pods", len(nodes.store), len(pods.store))
        if not leader_elect:
            await scheduler.run()
            return
        le = config.leader_election
        elector = LeaderElector(client, LeaderElectionConfig(
            name=le.resource_name, namespace=le.resource_namespace, lease_duration=le.lease_duration,
            renew_deadline=le.renew_deadline, retry_period=le.retry_period))
        await elector.run(scheduler.run)
        raise LeadershipLost(f"lost the lease {le.resource_namespace}/{le.resource_name}")
    finally:
        await factory.stop()
        await asyncio.gather(*(r.close() for r in recorders.values()))
        await client.close()
