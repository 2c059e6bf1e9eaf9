"""The controllers of `kubelite controller-manager`, one module each, registered here by name."""

REGISTRY: dict[str, str] = {
    # name (as kube-controller-manager's --controllers calls it): "module:Class"
}
