"""Image references, normalized as Docker and Kubernetes do: `busybox` is `docker.io/library/busybox:latest`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubelite.kubelet.images.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
"""Docker Hub's names live under docker.io, its distribution API under this host."""
DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
DEFAULT_TAG = "latest"
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalized image reference: registry, repository path, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Registry and repository: `docker.io/library/busybox`."""
        return f"{self.registry}/{self.repository}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def store_name(self) -> str:
        """The name the store records for this reference: `name@digest` wins over `name:tag`, as in Docker."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag or DEFAULT_TAG}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def split_domain(name: str) -> tuple[str, str]:
    """Split a name into registry host and path; a first component is a host if it has `.` or `:` or is localhost."""
    head, sep, rest = name.partition("/")
    if not sep or (head != "localhost" and "." not in head and ":" not in head and head == head.lower()):
        domain, path = DOCKER_HUB, name
    else:
        domain, path = head, rest
    if domain in DOCKER_HUB_ALIASES:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse_reference(text: str) -> Reference:
    """Parse and normalize an image reference; a reference with neither tag nor digest gets `latest`."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    remainder, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise InvalidReference(f"invalid reference format: bad digest {digest!r} in {text!r}")
    name, tag = remainder, None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        name, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid reference format: bad tag {tag!r} in {text!r}")
    domain, path = split_domain(name)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidReference(f"invalid reference format: bad registry host {domain!r} in {text!r}")
    if path.lower() != path:
        raise InvalidReference(f"invalid reference format: repository name must be lowercase: {text!r}")
    if not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise InvalidReference(f"invalid reference format: {text!r}")
    if len(f"{domain}/{path}") > NAME_MAX:
        raise InvalidReference(f"invalid reference format: repository name longer than {NAME_MAX} characters")
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest or None)


def is_image_id(text: str) -> bool:
    """Whether the text is a full image id, `sha256:` and 64 lowercase hex digits."""
    return bool(_SHA256.fullmatch(text))


def is_local_host(host: str) -> bool:
    """Loopback registries speak plain HTTP by default, as Docker and containerd allow."""
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return hostname in LOCAL_HOSTS or hostname.startswith("127.")
