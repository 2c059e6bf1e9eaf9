"""The CRI `runtime.v1` messages the kubelet needs, to and from the runtime interface's dataclasses.

Requests are built with protowire's Writer and replies walked with its reader; field numbers follow the CRI's
api.proto. Zero values are left out, as proto3 does. Where CRI status messages carry less than we gave (a sandbox's
DNS, host namespaces, ports; the image a container was asked with; a container's sandbox), the missing part travels
in an annotation of our own and is taken out again on the way back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from kubelite.api import protowire
from kubelite.api.protowire import Writer
from kubelite.kubelet.images.config import AuthConfig
from kubelite.kubelet.images.store import Image
from kubelite.kubelet.runtime.base import (
    ContainerConfig,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    DNSConfig,
    LinuxResources,
    MountPropagation,
    PortMapping,
    RuntimeVersion,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
    SecurityContext,
)

RUNTIME_SERVICE = "/runtime.v1.RuntimeService/"
IMAGE_SERVICE = "/runtime.v1.ImageService/"
API_VERSION = "v1"
SANDBOX_CONFIG_ANNOTATION = "io.kubelite.cri.sandbox-config"
"""JSON of the SandboxConfig fields that PodSandboxStatus does not return."""
SANDBOX_ID_ANNOTATION = "io.kubelite.cri.sandbox-id"
"""A container's sandbox: CRI's ContainerStatus does not name it."""
IMAGE_ANNOTATION = "io.kubelite.cri.image"
"""The image reference the pod asked for; CRI reports the image's first tag instead."""
TTY_ANNOTATION = "io.kubelite.cri.tty"
"""Present ("true") on containers with a terminal: Attach must say so, and ContainerStatus does not."""
PRIVATE_ANNOTATIONS = frozenset({SANDBOX_CONFIG_ANNOTATION, SANDBOX_ID_ANNOTATION, IMAGE_ANNOTATION, TTY_ANNOTATION})

POD, CONTAINER, NODE, TARGET = 0, 1, 2, 3
"""CRI NamespaceMode."""
PROTOCOLS = {"TCP": 0, "UDP": 1, "SCTP": 2}
PROPAGATIONS = {MountPropagation.PRIVATE: 0, MountPropagation.HOST_TO_CONTAINER: 1,
                MountPropagation.BIDIRECTIONAL: 2}
PROFILE_TYPES = {"RuntimeDefault": 0, "Unconfined": 1, "Localhost": 2}
SANDBOX_STATES = {0: SandboxState.READY, 1: SandboxState.NOTREADY}
CONTAINER_STATES = {0: ContainerState.CREATED, 1: ContainerState.RUNNING, 2: ContainerState.EXITED,
                    3: ContainerState.UNKNOWN}
SANDBOX_STATE_VALUES = {state: value for value, state in SANDBOX_STATES.items()}
CONTAINER_STATE_VALUES = {state: value for value, state in CONTAINER_STATES.items()}

Fields = dict[int, list[int | bytes]]


class DecodeError(ValueError):
    """A reply that is not the CRI message it should be."""


# ---- writing

def _string(w: Writer, field: int, value: str) -> None:
    if value:
        w.string(field, value)


def _varint(w: Writer, field: int, value: int) -> None:
    if value:
        w.varint(field, value)


def _bool(w: Writer, field: int, value: bool) -> None:
    if value:
        w.boolean(field, True)


def _strings(w: Writer, field: int, values: Iterable[str]) -> None:
    for value in values:
        w.string(field, value)


def _packed(w: Writer, field: int, values: Sequence[int]) -> None:
    """A repeated integer field, packed (proto3's encoding)."""
    if values:
        w.length_delimited(field, b"".join(protowire.encode_varint(v) for v in values))


def _map(w: Writer, field: int, values: Mapping[str, str]) -> None:
    """A map<string, string>: one entry message (key 1, value 2) per pair."""
    for key, value in values.items():
        mark = w.begin(field)
        w.string(1, key)
        w.string(2, value)
        w.end(mark)


def _int64_value(w: Writer, field: int, value: int | None) -> None:
    """An Int64Value wrapper: present (even for 0) when the value is set."""
    if value is not None:
        mark = w.begin(field)
        _varint(w, 1, value)
        w.end(mark)


def _namespace_options(w: Writer, field: int, config: SandboxConfig, pid_target: str = "") -> None:
    """NamespaceOption as the kubelet sets it: network and IPC of the pod or the node; PID of the container, the
    pod (shareProcessNamespace), the node, or another container's (an ephemeral container's target)."""
    mark = w.begin(field)
    _varint(w, 1, NODE if config.host_network else POD)
    pid = NODE if config.host_pid else POD if config.share_process_namespace else TARGET if pid_target else CONTAINER
    _varint(w, 2, pid)
    _varint(w, 3, NODE if config.host_ipc else POD)
    if pid == TARGET:
        _string(w, 4, pid_target)
    w.end(mark)


def _hidden_sandbox_fields(config: SandboxConfig) -> str:
    """The SandboxConfig minus what PodSandboxStatus returns anyway (labels, annotations), as JSON."""
    data = dataclasses.asdict(config)
    del data["labels"], data["annotations"]
    return orjson.dumps(data).decode()


def _sandbox_config(w: Writer, field: int, config: SandboxConfig) -> None:
    """PodSandboxConfig. A host-network pod has the node's hostname (its UTS namespace is the node's), so none is
    sent. The sandbox is privileged when a container of the pod is (the runtime refuses privileged containers in
    an unprivileged sandbox)."""
    mark = w.begin(field)
    meta = w.begin(1)
    _string(w, 1, config.name)
    _string(w, 2, config.uid)
    _string(w, 3, config.namespace)
    _varint(w, 4, config.attempt)
    w.end(meta)
    _string(w, 2, "" if config.host_network else config.hostname)
    _string(w, 3, config.log_directory)
    if config.dns is not None:
        dns = w.begin(4)
        _strings(w, 1, config.dns.servers)
        _strings(w, 2, config.dns.searches)
        _strings(w, 3, config.dns.options)
        w.end(dns)
    for port in config.port_mappings:
        mapping = w.begin(5)
        _varint(w, 1, PROTOCOLS.get(port.protocol.upper(), 0))
        _varint(w, 2, port.container_port)
        _varint(w, 3, port.host_port)
        _string(w, 4, port.host_ip)
        w.end(mapping)
    _map(w, 6, config.labels)
    _map(w, 7, {**config.annotations, SANDBOX_CONFIG_ANNOTATION: _hidden_sandbox_fields(config)})
    linux = w.begin(8)
    _string(w, 1, config.cgroup_parent)
    security = w.begin(2)
    _namespace_options(w, 1, config)
    _bool(w, 6, config.privileged)
    w.end(security)
    _map(w, 3, config.sysctls)
    w.end(linux)
    w.end(mark)


def _resources(w: Writer, field: int, resources: LinuxResources) -> None:
    mark = w.begin(field)
    _varint(w, 1, resources.cpu_period)
    _varint(w, 2, resources.cpu_quota)
    _varint(w, 3, resources.cpu_shares)
    _varint(w, 4, resources.memory_limit_in_bytes)
    _varint(w, 5, resources.oom_score_adj)
    _string(w, 6, resources.cpuset_cpus)
    _string(w, 7, resources.cpuset_mems)
    for size, limit in resources.hugepage_limits.items():
        entry = w.begin(8)
        _string(w, 1, size)
        _varint(w, 2, limit)
        w.end(entry)
    w.end(mark)


def _security_context(w: Writer, field: int, security: SecurityContext, sandbox: SandboxConfig) -> None:
    """LinuxContainerSecurityContext; masked and read-only paths only when given (else the runtime's defaults)."""
    mark = w.begin(field)
    caps = w.begin(1)
    _strings(w, 1, security.capabilities.add)
    _strings(w, 2, security.capabilities.drop)
    w.end(caps)
    _bool(w, 2, security.privileged)
    _namespace_options(w, 3, sandbox, security.pid_target)
    _int64_value(w, 5, security.run_as_user)
    _string(w, 6, security.run_as_username)
    _bool(w, 7, security.readonly_rootfs)
    _packed(w, 8, security.supplemental_groups)
    _bool(w, 11, security.no_new_privs)
    _int64_value(w, 12, security.run_as_group)
    _strings(w, 13, security.masked_paths or ())
    _strings(w, 14, security.readonly_paths or ())
    seccomp = w.begin(15)
    _varint(w, 1, PROFILE_TYPES.get(security.seccomp.type, PROFILE_TYPES["Unconfined"]))
    _string(w, 2, security.seccomp.localhost_ref)
    w.end(seccomp)
    w.end(mark)


def _container_config(w: Writer, field: int, config: ContainerConfig, sandbox_id: str,
                      sandbox: SandboxConfig) -> None:
    mark = w.begin(field)
    meta = w.begin(1)
    _string(w, 1, config.name)
    _varint(w, 2, config.attempt)
    w.end(meta)
    image = w.begin(2)
    _string(w, 1, config.image_name)
    w.end(image)
    _strings(w, 3, config.command)
    _strings(w, 4, config.args)
    _string(w, 5, config.working_dir)
    for key, value in config.env.items():
        env = w.begin(6)
        w.string(1, key)
        w.string(2, value)
        w.end(env)
    for mount in config.mounts:
        entry = w.begin(7)
        _string(w, 1, mount.container_path)
        _string(w, 2, mount.host_path)
        _bool(w, 3, mount.readonly)
        _varint(w, 5, PROPAGATIONS[MountPropagation(mount.propagation)])
        w.end(entry)
    for device in config.devices:
        entry = w.begin(8)
        _string(w, 1, device.container_path or device.host_path)
        _string(w, 2, device.host_path)
        _string(w, 3, device.permissions)
        w.end(entry)
    _map(w, 9, config.labels)
    private = {SANDBOX_ID_ANNOTATION: sandbox_id, IMAGE_ANNOTATION: config.image_name}
    if config.tty:
        private[TTY_ANNOTATION] = "true"
    _map(w, 10, {**config.annotations, **private})
    _string(w, 11, config.log_path)
    _bool(w, 12, config.stdin)
    _bool(w, 13, config.stdin_once)
    _bool(w, 14, config.tty)
    linux = w.begin(15)
    _resources(w, 1, config.resources)
    _security_context(w, 2, config.security, sandbox)
    w.end(linux)
    w.end(mark)


def _message(build: Any, *args: Any) -> bytes:
    w = Writer()
    build(w, *args)
    return w.getvalue()


def _ids(*pairs: tuple[int, str]) -> bytes:
    w = Writer()
    for field, value in pairs:
        _string(w, field, value)
    return w.getvalue()


def _seconds(value: float) -> int:
    """A duration in whole seconds, rounded up (CRI timeouts are int64 seconds; 0 means none)."""
    return max(0, math.ceil(value))


# ---- requests: RuntimeService

def version_request() -> bytes:
    """VersionRequest."""
    return _ids((1, API_VERSION))


def run_pod_sandbox_request(config: SandboxConfig) -> bytes:
    """RunPodSandboxRequest with the default runtime handler."""
    return _message(_sandbox_config, 1, config)


def sandbox_request(sandbox_id: str) -> bytes:
    """Stop-, RemovePodSandbox- and PodSandboxStatusRequest: the sandbox id in field 1."""
    return _ids((1, sandbox_id))


def list_pod_sandbox_request(state: SandboxState | None = None) -> bytes:
    """ListPodSandboxRequest, filtered by state when given (the wrapper is sent even for READY, which is 0)."""
    w = Writer()
    if state is not None:
        mark = w.begin(1)
        wrapper = w.begin(2)
        _varint(w, 1, SANDBOX_STATE_VALUES[state])
        w.end(wrapper)
        w.end(mark)
    return w.getvalue()


def create_container_request(sandbox_id: str, config: ContainerConfig, sandbox: SandboxConfig) -> bytes:
    """CreateContainerRequest: the container's config and, as CRI requires, its sandbox's."""
    w = Writer()
    w.string(1, sandbox_id)
    _container_config(w, 2, config, sandbox_id, sandbox)
    _sandbox_config(w, 3, sandbox)
    return w.getvalue()


def container_request(container_id: str) -> bytes:
    """Start-, Remove-, ContainerStatus-, ReopenContainerLog- and ContainerStatsRequest: the id in field 1."""
    return _ids((1, container_id))


def stop_container_request(container_id: str, timeout_s: float) -> bytes:
    """StopContainerRequest: the grace period in whole seconds (0: kill at once)."""
    w = Writer()
    w.string(1, container_id)
    _varint(w, 2, _seconds(timeout_s))
    return w.getvalue()


def list_containers_request(sandbox_id: str | None = None, state: ContainerState | None = None) -> bytes:
    """ListContainersRequest with a filter on sandbox and/or state."""
    w = Writer()
    if sandbox_id is not None or state is not None:
        mark = w.begin(1)
        if state is not None:
            wrapper = w.begin(2)
            _varint(w, 1, CONTAINER_STATE_VALUES[state])
            w.end(wrapper)
        _string(w, 3, sandbox_id or "")
        w.end(mark)
    return w.getvalue()


def exec_sync_request(container_id: str, cmd: Sequence[str], timeout_s: float = 0) -> bytes:
    """ExecSyncRequest; the timeout in whole seconds, 0 for none."""
    w = Writer()
    w.string(1, container_id)
    _strings(w, 2, cmd)
    _varint(w, 3, _seconds(timeout_s))
    return w.getvalue()


def exec_request(container_id: str, cmd: Sequence[str], tty: bool, stdin: bool) -> bytes:
    """ExecRequest streaming stdout, and stderr unless there is a terminal (which merges both)."""
    w = Writer()
    w.string(1, container_id)
    _strings(w, 2, cmd)
    _bool(w, 3, tty)
    _bool(w, 4, stdin)
    w.boolean(5, True)
    _bool(w, 6, not tty)
    return w.getvalue()


def attach_request(container_id: str, stdin: bool, tty: bool) -> bytes:
    """AttachRequest streaming stdout, and stderr unless the container has a terminal."""
    w = Writer()
    w.string(1, container_id)
    _bool(w, 2, stdin)
    _bool(w, 3, tty)
    w.boolean(4, True)
    _bool(w, 5, not tty)
    return w.getvalue()


def port_forward_request(sandbox_id: str, ports: Sequence[int]) -> bytes:
    """PortForwardRequest (ports packed)."""
    w = Writer()
    w.string(1, sandbox_id)
    _packed(w, 2, ports)
    return w.getvalue()


# ---- requests: ImageService

def _image_spec(w: Writer, field: int, ref: str) -> None:
    mark = w.begin(field)
    _string(w, 1, ref)
    w.end(mark)


def image_request(ref: str) -> bytes:
    """ImageStatus- and RemoveImageRequest: an ImageSpec in field 1."""
    return _message(_image_spec, 1, ref)


def list_images_request() -> bytes:
    """ListImagesRequest without a filter."""
    return b""


def pull_image_request(ref: str, auth: AuthConfig | None = None) -> bytes:
    """PullImageRequest with the registry's credentials, if any. No server address: containerd 1.6 wants a URL
    there and drops credentials whose host differs from the endpoint's (a mirror's, or Docker Hub's API host)."""
    w = Writer()
    _image_spec(w, 1, ref)
    if auth is not None:
        mark = w.begin(2)
        _string(w, 1, auth.username)
        _string(w, 2, auth.password)
        _string(w, 5, auth.identity_token)
        w.end(mark)
    return w.getvalue()


def image_fs_info_request() -> bytes:
    """ImageFsInfoRequest (empty)."""
    return b""


# ---- reading

def _fields(data: bytes) -> Fields:
    try:
        return protowire.read_message(data)
    except ValueError as exc:
        raise DecodeError(f"malformed CRI message: {exc}") from None


def _last(fields: Fields, field: int, kind: type) -> Any:
    values = fields.get(field)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, kind):
        raise DecodeError(f"field {field} has the wrong wire type")
    return value


def _str(fields: Fields, field: int) -> str:
    value = _last(fields, field, bytes)
    try:
        return value.decode() if value is not None else ""
    except UnicodeDecodeError:
        raise DecodeError(f"field {field} is not UTF-8") from None


def _bytes(fields: Fields, field: int) -> bytes:
    return _last(fields, field, bytes) or b""


def _int(fields: Fields, field: int) -> int:
    """An int32/int64 (two's complement varint)."""
    value = _last(fields, field, int)
    return protowire.as_int64(value) if value is not None else 0


def _uint(fields: Fields, field: int) -> int:
    return _last(fields, field, int) or 0


def _sub(fields: Fields, field: int) -> Fields:
    """A nested message (empty when absent)."""
    value = _last(fields, field, bytes)
    return _fields(value) if value else {}


def _subs(fields: Fields, field: int) -> list[Fields]:
    """A repeated nested message."""
    out = []
    for value in fields.get(field, []):
        if not isinstance(value, bytes):
            raise DecodeError(f"field {field} has the wrong wire type")
        out.append(_fields(value))
    return out


def _strs(fields: Fields, field: int) -> list[str]:
    out = []
    for value in fields.get(field, []):
        if not isinstance(value, bytes):
            raise DecodeError(f"field {field} has the wrong wire type")
        out.append(value.decode(errors="replace"))
    return out


def _str_map(fields: Fields, field: int) -> dict[str, str]:
    return {_str(entry, 1): _str(entry, 2) for entry in _subs(fields, field)}


def _wrapped(fields: Fields, field: int) -> int | None:
    """An Int64Value/UInt64Value wrapper: its value, or None when the wrapper is absent."""
    return _int(_sub(fields, field), 1) if field in fields else None


# ---- replies: RuntimeService

def decode_version(data: bytes) -> RuntimeVersion:
    """VersionResponse: the runtime's name and version."""
    fields = _fields(data)
    return RuntimeVersion(_str(fields, 2), _str(fields, 3))


def decode_sandbox_id(data: bytes) -> str:
    """RunPodSandboxResponse."""
    return _str(_fields(data), 1)


def _sandbox_config_back(meta: Fields, labels: dict[str, str], annotations: dict[str, str]) -> SandboxConfig:
    """The SandboxConfig that made the sandbox: metadata, labels and annotations, plus our annotation's fields."""
    hidden = annotations.pop(SANDBOX_CONFIG_ANNOTATION, None)
    config = SandboxConfig(name=_str(meta, 1), uid=_str(meta, 2), namespace=_str(meta, 3), attempt=_uint(meta, 4),
                           labels=labels, annotations=annotations)
    if hidden:
        try:
            data = orjson.loads(hidden)
            dns = data.pop("dns", None)
            ports = data.pop("port_mappings", [])
            config = dataclasses.replace(config, **data, dns=DNSConfig(**dns) if dns is not None else None,
                                         port_mappings=[PortMapping(**p) for p in ports])
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise DecodeError(f"bad {SANDBOX_CONFIG_ANNOTATION} annotation: {exc}") from None
    return config


def _sandbox(fields: Fields, labels_field: int, annotations_field: int) -> SandboxStatus:
    config = _sandbox_config_back(_sub(fields, 2), _str_map(fields, labels_field), _str_map(fields, annotations_field))
    return SandboxStatus(id=_str(fields, 1), config=config,
                         state=SANDBOX_STATES.get(_uint(fields, 3), SandboxState.NOTREADY), created_at=_int(fields, 4))


def decode_pod_sandbox_status(data: bytes) -> SandboxStatus:
    """PodSandboxStatusResponse: state, creation time, IP and the config it was made with."""
    status = _sub(_fields(data), 1)
    sandbox = _sandbox(status, 7, 8)
    sandbox.ip = _str(_sub(status, 5), 1)
    return sandbox


def decode_list_pod_sandbox(data: bytes) -> list[SandboxStatus]:
    """ListPodSandboxResponse: every sandbox without its IP (only PodSandboxStatus has it)."""
    return [_sandbox(item, 5, 6) for item in _subs(_fields(data), 1)]


def decode_container_id(data: bytes) -> str:
    """CreateContainerResponse."""
    return _str(_fields(data), 1)


def _public(annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k not in PRIVATE_ANNOTATIONS}


def decode_container_status(data: bytes) -> ContainerStatus:
    """ContainerStatusResponse (no pid: CRI tells it only in verbose info)."""
    status = _sub(_fields(data), 1)
    meta = _sub(status, 2)
    annotations = _str_map(status, 13)
    return ContainerStatus(
        id=_str(status, 1), sandbox_id=annotations.get(SANDBOX_ID_ANNOTATION, ""), name=_str(meta, 1),
        attempt=_uint(meta, 2), state=CONTAINER_STATES.get(_uint(status, 3), ContainerState.UNKNOWN),
        created_at=_int(status, 4), started_at=_int(status, 5), finished_at=_int(status, 6),
        exit_code=_int(status, 7), reason=_str(status, 10), message=_str(status, 11),
        image=annotations.get(IMAGE_ANNOTATION) or _str(_sub(status, 8), 1), log_path=_str(status, 15),
        labels=_str_map(status, 12), annotations=_public(annotations))


def decode_container_tty(data: bytes) -> bool:
    """Whether the container of a ContainerStatusResponse has a terminal (by our annotation)."""
    return _str_map(_sub(_fields(data), 1), 13).get(TTY_ANNOTATION) == "true"


def decode_list_containers(data: bytes) -> list[ContainerStatus]:
    """ListContainersResponse: id, sandbox, name, attempt, state, creation time, image, labels and annotations of
    each (times and exit codes need ContainerStatus)."""
    out = []
    for item in _subs(_fields(data), 1):
        meta = _sub(item, 3)
        annotations = _str_map(item, 9)
        out.append(ContainerStatus(
            id=_str(item, 1), sandbox_id=_str(item, 2), name=_str(meta, 1), attempt=_uint(meta, 2),
            state=CONTAINER_STATES.get(_uint(item, 6), ContainerState.UNKNOWN), created_at=_int(item, 7),
            image=annotations.get(IMAGE_ANNOTATION) or _str(_sub(item, 4), 1), labels=_str_map(item, 8),
            annotations=_public(annotations)))
    return out


def decode_exec_sync(data: bytes) -> tuple[int, bytes, bytes]:
    """ExecSyncResponse: (exit code, stdout, stderr)."""
    fields = _fields(data)
    return _int(fields, 3), _bytes(fields, 1), _bytes(fields, 2)


def decode_url(data: bytes) -> str:
    """Exec-, Attach- and PortForwardResponse: the streaming server's URL."""
    return _str(_fields(data), 1)


def decode_container_stats(data: bytes) -> ContainerStats:
    """ContainerStatsResponse: cumulative CPU time, memory working set and usage."""
    stats = _sub(_fields(data), 1)
    cpu, memory = _sub(stats, 2), _sub(stats, 3)
    return ContainerStats(container_id=_str(_sub(stats, 1), 1), timestamp=_int(cpu, 1) or _int(memory, 1),
                          cpu_usage_core_nanoseconds=_wrapped(cpu, 2) or 0,
                          memory_working_set_bytes=_wrapped(memory, 2) or 0,
                          memory_usage_bytes=_wrapped(memory, 4) or 0)


# ---- replies: ImageService

def _image(fields: Fields) -> Image:
    """A CRI Image as the image store's Image; its user (name, else uid) goes where the runAsNonRoot check looks."""
    uid = _wrapped(fields, 5)
    user = _str(fields, 6) or (str(uid) if uid is not None else "")
    return Image(id=_str(fields, 1), names=_strs(fields, 2), digests=_strs(fields, 3), size=_uint(fields, 4),
                 config={"User": user} if user else {})


def decode_pull_image(data: bytes) -> str:
    """PullImageResponse: the image's reference (its id, for containerd)."""
    return _str(_fields(data), 1)


def decode_list_images(data: bytes) -> list[Image]:
    """ListImagesResponse."""
    return [_image(item) for item in _subs(_fields(data), 1)]


def decode_image_status(data: bytes) -> Image | None:
    """ImageStatusResponse: the image, or None when the runtime has none by that reference."""
    fields = _fields(data)
    return _image(_sub(fields, 1)) if 1 in fields else None


def decode_image_fs_info(data: bytes) -> int:
    """ImageFsInfoResponse: bytes the images take, over all image filesystems."""
    return sum(_wrapped(usage, 3) or 0 for usage in _subs(_fields(data), 1))
