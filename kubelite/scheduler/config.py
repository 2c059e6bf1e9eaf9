"""KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1): profiles, plugin sets and args, with defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelite.scheduler.framework import EXTENSION_POINTS, Plugin
from kubelite.scheduler.plugins import REGISTRY

Obj = dict[str, Any]
API_VERSION = "kubescheduler.config.k8s.io/v1"
KIND = "KubeSchedulerConfiguration"
DEFAULT_SCHEDULER_NAME = "default-scheduler"
MULTI_POINT = "multiPoint"
DEFAULT_PLUGINS: list[tuple[str, int]] = [
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeBinding", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
]
"""Upstream's default multiPoint set (of its volume plugins only VolumeBinding, which does not score here), with
score weights."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """The configuration file is not a valid KubeSchedulerConfiguration."""


@dataclass
class PluginSet:
    """Enabled plugins (name, weight) and disabled names ("*" disables every default) of one extension point."""

    enabled: list[tuple[str, int]] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)


@dataclass
class Profile:
    """One scheduling profile: its schedulerName, plugin sets per extension point and plugin args."""

    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    plugins: dict[str, PluginSet] = field(default_factory=dict)
    plugin_config: dict[str, Obj] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None

    def expanded_plugins(self, registry: Mapping[str, type[Plugin]]) -> dict[str, list[tuple[str, int]]]:
        """Plugins per extension point after merging the defaults and expanding multiPoint, in upstream's order."""
        multi = _merge(PluginSet(list(DEFAULT_PLUGINS)), self.plugins.get(MULTI_POINT, PluginSet()))
        multi_weights = {name: weight for name, weight in multi.enabled}
        result: dict[str, list[tuple[str, int]]] = {}
        for point, kind in EXTENSION_POINTS.items():
            point_set = self.plugins.get(point, PluginSet())
            specific = [name for name, _ in point_set.enabled]
            weights = {name: weight for name, weight in point_set.enabled}
            if "*" in point_set.disabled:
                ordered = specific
            else:
                overrides: list[str] = []
                from_multi: list[str] = []
                for name, _ in multi.enabled:
                    cls = registry.get(name)
                    if cls is None:
                        raise ConfigError(f"plugin {name!r} does not exist")
                    if not issubclass(cls, kind) or name in point_set.disabled:
                        continue
                    if name in specific:
                        overrides.append(name)
                    elif name in from_multi:
                        raise ConfigError(f"plugin {name!r} already registered as {point}")
                    else:
                        from_multi.append(name)
                ordered = list(dict.fromkeys([*overrides, *from_multi, *specific]))
            result[point] = [(name, weights.get(name) or multi_weights.get(name) or 1) for name in ordered]
        return result


@dataclass
class LeaderElection:
    """Where the scheduler's Lease lives and its timing."""

    resource_name: str = "kube-scheduler"
    resource_namespace: str = "kube-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass
class SchedulerConfig:
    """The whole configuration; client QPS is lifted above upstream's 50/100 so binding is not throttled."""

    profiles: list[Profile] = field(default_factory=lambda: [Profile()])
    percentage_of_nodes_to_score: int | None = None
    pod_initial_backoff: float = 1.0
    pod_max_backoff: float = 10.0
    qps: float = 5000.0
    burst: int = 10000
    leader_election: LeaderElection = field(default_factory=LeaderElection)


def _merge(defaults: PluginSet, custom: PluginSet) -> PluginSet:
    """mergePluginSet: drop disabled defaults, re-configure defaults in place, append other custom plugins."""
    disabled = set(custom.disabled) | set(defaults.disabled)
    custom_by_name = {name: (index, weight) for index, (name, weight) in enumerate(custom.enabled)}
    replaced: set[int] = set()
    enabled: list[tuple[str, int]] = []
    if "*" not in disabled:
        for name, weight in defaults.enabled:
            if name in disabled:
                continue
            if name in custom_by_name:
                index, weight = custom_by_name[name]
                replaced.add(index)
            enabled.append((name, weight))
    enabled += [plugin for index, plugin in enumerate(custom.enabled) if index not in replaced]
    return PluginSet(enabled, [*custom.disabled, *defaults.disabled])


def parse_duration(value: Any) -> float:
    """A Go duration ("15s", "1m30s", "500ms") or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"invalid duration {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _plugin_set(raw: Any, where: str) -> PluginSet:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object with enabled/disabled lists")
    enabled = []
    for entry in raw.get("enabled") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigError(f"{where}.enabled: every plugin needs a name")
        enabled.append((str(entry["name"]), int(entry.get("weight") or 0)))
    disabled = []
    for entry in raw.get("disabled") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigError(f"{where}.disabled: every plugin needs a name")
        disabled.append(str(entry["name"]))
    return PluginSet(enabled, disabled)


def _percentage(value: Any, where: str) -> int | None:
    if value is None:
        return None
    number = int(value)
    if not 0 <= number <= 100:
        raise ConfigError(f"{where}: must be between 0 and 100, got {number}")
    return number or None


def _profile(raw: Any, index: int) -> Profile:
    where = f"profiles[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object")
    plugins: dict[str, PluginSet] = {}
    for point, value in (raw.get("plugins") or {}).items():
        if point != MULTI_POINT and point not in EXTENSION_POINTS:
            continue
        plugins[point] = _plugin_set(value or {}, f"{where}.plugins.{point}")
    plugin_config: dict[str, Obj] = {}
    for entry in raw.get("pluginConfig") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigError(f"{where}.pluginConfig: every entry needs a name")
        plugin_config[str(entry["name"])] = dict(entry.get("args") or {})
    return Profile(scheduler_name=str(raw.get("schedulerName") or DEFAULT_SCHEDULER_NAME), plugins=plugins,
                   plugin_config=plugin_config,
                   percentage_of_nodes_to_score=_percentage(raw.get("percentageOfNodesToScore"),
                                                            f"{where}.percentageOfNodesToScore"))


def parse_config(data: Any, registry: Mapping[str, type[Plugin]] = REGISTRY) -> SchedulerConfig:
    """A SchedulerConfig from a decoded KubeSchedulerConfiguration document (plugins checked against registry)."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML object")
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise ConfigError(f"expected apiVersion {API_VERSION} and kind {KIND}, got "
                          f"{data.get('apiVersion')!r} {data.get('kind')!r}")
    config = SchedulerConfig()
    profiles = [_profile(p, i) for i, p in enumerate(data.get("profiles") or [])]
    if profiles:
        names = [p.scheduler_name for p in profiles]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate profile schedulerName in {names}")
        config.profiles = profiles
    config.percentage_of_nodes_to_score = _percentage(data.get("percentageOfNodesToScore"),
                                                      "percentageOfNodesToScore")
    if data.get("podInitialBackoffSeconds") is not None:
        config.pod_initial_backoff = float(data["podInitialBackoffSeconds"])
    if data.get("podMaxBackoffSeconds") is not None:
        config.pod_max_backoff = float(data["podMaxBackoffSeconds"])
    if config.pod_initial_backoff <= 0 or config.pod_max_backoff < config.pod_initial_backoff:
        raise ConfigError("need 0 < podInitialBackoffSeconds <= podMaxBackoffSeconds")
    connection = data.get("clientConnection") or {}
    if connection.get("qps") is not None:
        config.qps = float(connection["qps"])
    if connection.get("burst") is not None:
        config.burst = int(connection["burst"])
    election = data.get("leaderElection") or {}
    le = config.leader_election
    le.resource_name = election.get("resourceName") or le.resource_name
    le.resource_namespace = election.get("resourceNamespace") or le.resource_namespace
    for key, attr in (("leaseDuration", "lease_duration"), ("renewDeadline", "renew_deadline"),
                      ("retryPeriod", "retry_period")):
        if election.get(key) is not None:
            setattr(le, attr, parse_duration(election[key]))
    for profile in config.profiles:
        if profile.percentage_of_nodes_to_score is None:
            profile.percentage_of_nodes_to_score = config.percentage_of_nodes_to_score
        profile.expanded_plugins(registry)
    return config


def load_config(path: str | Path | None) -> SchedulerConfig:
    """The configuration in a file, or the defaults without one."""
    if not path:
        return SchedulerConfig()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse_config(data)
