"""The API client every kubelite component builds on: REST, informers, work queue, leader election, events."""

from kubelite.client.config import ClientConfig, ConfigError, load_config, load_incluster, load_kubeconfig
from kubelite.client.controller import Controller, Requeue, owner_keys, run_controllers
from kubelite.client.errors import ApiError, GoneError, is_already_exists, is_conflict, is_gone, is_not_found
from kubelite.client.events import EventRecorder
from kubelite.client.informer import Informer, SharedInformerFactory
from kubelite.client.leaderelection import LeaderElectionConfig, LeaderElector
from kubelite.client.resources import Resource, resource, resource_of
from kubelite.client.rest import ApiClient
from kubelite.client.store import Store, key_of, split_key
from kubelite.client.workqueue import WorkQueue

__all__ = [
    "ApiClient", "ApiError", "ClientConfig", "ConfigError", "Controller", "EventRecorder", "GoneError", "Informer",
    "LeaderElectionConfig", "LeaderElector", "Requeue", "Resource", "SharedInformerFactory", "Store", "WorkQueue",
    "is_already_exists", "is_conflict", "is_gone", "is_not_found", "key_of", "load_config", "load_incluster",
    "load_kubeconfig", "owner_keys", "resource", "resource_of", "run_controllers", "split_key",
]
