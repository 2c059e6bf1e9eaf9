"""The description of one served resource: where it lives in the API and how it behaves."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubelite.api.strategy import Strategy

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class ScalePaths:
    """Where a kind keeps what its scale subresource reads and writes (dotted paths)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclass(eq=False)
class ResourceType:
    """One resource of one group-version: pods in core/v1, deployments in apps/v1, ..."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    strategy: Strategy = field(default_factory=Strategy)
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    """Names among status, scale, binding, eviction (log, exec... come with the kubelet)."""
    scale: ScalePaths | None = None
    schema: str = ""
    """Definition name in the upstream schemas, e.g. io.k8s.api.core.v1.Pod; empty for CRs."""
    storage_group: str | None = None
    """Group whose storage this resource shares (events.k8s.io events live with core events "")."""

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def schema_name(self) -> str:
        """The schema component name: upstream's for built-ins, the reversed group for custom resources."""
        return self.schema or ".".join([*reversed(self.group.split(".")), self.version, self.kind])

    @property
    def persisted(self) -> bool:
        """Create-only review kinds (TokenReview, SelfSubjectReview, ...) are never stored."""
        return "get" in self.verbs
