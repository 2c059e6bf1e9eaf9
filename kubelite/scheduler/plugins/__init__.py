"""The plugin registry: a new plugin is one module here plus one line below (plugin name -> module)."""

from __future__ import annotations

from importlib import import_module

from kubelite.scheduler.framework import Plugin

_MODULES = {
    "PrioritySort": "queuesort",
    "SchedulingGates": "schedulinggates",
    "NodeUnschedulable": "nodeunschedulable",
    "NodeName": "nodename",
    "TaintToleration": "tainttoleration",
    "NodeAffinity": "nodeaffinity",
    "NodePorts": "nodeports",
    "NodeResourcesFit": "noderesourcesfit",
    "VolumeBinding": "volumebinding",
    "NodeResourcesBalancedAllocation": "balancedallocation",
    "PodTopologySpread": "podtopologyspread",
    "InterPodAffinity": "interpodaffinity",
    "ImageLocality": "imagelocality",
    "DefaultPreemption": "defaultpreemption",
    "DefaultBinder": "defaultbinder",
}


def _load(name: str, module: str) -> type[Plugin]:
    """The plugin class `name` of module `module` (the class is named as the plugin)."""
    cls = getattr(import_module(f"{__name__}.{module}"), name)
    if not (isinstance(cls, type) and issubclass(cls, Plugin) and cls.name == name):
        raise TypeError(f"{module}.{name} is not the plugin {name}")
    return cls


REGISTRY: dict[str, type[Plugin]] = {name: _load(name, module) for name, module in _MODULES.items()}
"""Every in-tree plugin by name."""
