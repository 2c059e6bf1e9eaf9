"""CRI runtime.v1 messages: byte-exact requests, requests read back by Google's protobuf (schemas of the fields we
use, built here), replies it writes decoded into our dataclasses, round trips and unknown fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from kubelite.api.protowire import Writer
from kubelite.kubelet.images.config import AuthConfig
from kubelite.kubelet.runtime import criproto
from kubelite.kubelet.runtime.base import (
    Capabilities,
    ContainerConfig,
    ContainerState,
    Device,
    DNSConfig,
    LinuxResources,
    Mount,
    MountPropagation,
    PortMapping,
    SandboxConfig,
    SandboxState,
    SecurityContext,
    SecurityProfile,
)

S, B, BOOL, I32, I64, U32, U64, MAP = "string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "map"
SCHEMA: dict[str, list[tuple[str, int, str]]] = {
    # (name, number, type); "*type" is repeated, "map" is map<string, string>, other names are messages
    "VersionResponse": [("version", 1, S), ("runtime_name", 2, S), ("runtime_version", 3, S),
                        ("runtime_api_version", 4, S)],
    "PodSandboxMetadata": [("name", 1, S), ("uid", 2, S), ("namespace", 3, S), ("attempt", 4, U32)],
    "DNSConfig": [("servers", 1, "*string"), ("searches", 2, "*string"), ("options", 3, "*string")],
    "PortMapping": [("protocol", 1, I32), ("container_port", 2, I32), ("host_port", 3, I32), ("host_ip", 4, S)],
    "NamespaceOption": [("network", 1, I32), ("pid", 2, I32), ("ipc", 3, I32), ("target_id", 4, S)],
    "Int64Value": [("value", 1, I64)],
    "UInt64Value": [("value", 1, U64)],
    "SecurityProfile": [("profile_type", 1, I32), ("localhost_ref", 2, S)],
    "LinuxSandboxSecurityContext": [("namespace_options", 1, "NamespaceOption"), ("privileged", 6, BOOL)],
    "LinuxPodSandboxConfig": [("cgroup_parent", 1, S), ("security_context", 2, "LinuxSandboxSecurityContext"),
                              ("sysctls", 3, MAP)],
    "PodSandboxConfig": [("metadata", 1, "PodSandboxMetadata"), ("hostname", 2, S), ("log_directory", 3, S),
                         ("dns_config", 4, "DNSConfig"), ("port_mappings", 5, "*PortMapping"), ("labels", 6, MAP),
                         ("annotations", 7, MAP), ("linux", 8, "LinuxPodSandboxConfig")],
    "RunPodSandboxRequest": [("config", 1, "PodSandboxConfig"), ("runtime_handler", 2, S)],
    "PodSandboxNetworkStatus": [("ip", 1, S)],
    "PodSandboxStatus": [("id", 1, S), ("metadata", 2, "PodSandboxMetadata"), ("state", 3, I32),
                         ("created_at", 4, I64), ("network", 5, "PodSandboxNetworkStatus"), ("labels", 7, MAP),
                         ("annotations", 8, MAP)],
    "PodSandboxStatusResponse": [("status", 1, "PodSandboxStatus"), ("info", 2, MAP)],
    "PodSandbox": [("id", 1, S), ("metadata", 2, "PodSandboxMetadata"), ("state", 3, I32), ("created_at", 4, I64),
                   ("labels", 5, MAP), ("annotations", 6, MAP)],
    "ListPodSandboxResponse": [("items", 1, "*PodSandbox")],
    "ContainerMetadata": [("name", 1, S), ("attempt", 2, U32)],
    "ImageSpec": [("image", 1, S), ("annotations", 2, MAP)],
    "KeyValue": [("key", 1, S), ("value", 2, S)],
    "Mount": [("container_path", 1, S), ("host_path", 2, S), ("readonly", 3, BOOL), ("selinux_relabel", 4, BOOL),
              ("propagation", 5, I32)],
    "Device": [("container_path", 1, S), ("host_path", 2, S), ("permissions", 3, S)],
    "LinuxContainerResources": [("cpu_period", 1, I64), ("cpu_quota", 2, I64), ("cpu_shares", 3, I64),
                                ("memory_limit_in_bytes", 4, I64), ("oom_score_adj", 5, I64),
                                ("cpuset_cpus", 6, S), ("cpuset_mems", 7, S),
                                ("hugepage_limits", 8, "*HugepageLimit")],
    "HugepageLimit": [("page_size", 1, S), ("limit", 2, U64)],
    "Capability": [("add_capabilities", 1, "*string"), ("drop_capabilities", 2, "*string")],
    "LinuxContainerSecurityContext": [
        ("capabilities", 1, "Capability"), ("privileged", 2, BOOL), ("namespace_options", 3, "NamespaceOption"),
        ("run_as_user", 5, "Int64Value"), ("run_as_username", 6, S), ("readonly_rootfs", 7, BOOL),
        ("supplemental_groups", 8, "*int64"), ("no_new_privs", 11, BOOL), ("run_as_group", 12, "Int64Value"),
        ("masked_paths", 13, "*string"), ("readonly_paths", 14, "*string"), ("seccomp", 15, "SecurityProfile")],
    "LinuxContainerConfig": [("resources", 1, "LinuxContainerResources"),
                             ("security_context", 2, "LinuxContainerSecurityContext")],
    "ContainerConfig": [("metadata", 1, "ContainerMetadata"), ("image", 2, "ImageSpec"), ("command", 3, "*string"),
                        ("args", 4, "*string"), ("working_dir", 5, S), ("envs", 6, "*KeyValue"),
                        ("mounts", 7, "*Mount"), ("devices", 8, "*Device"), ("labels", 9, MAP),
                        ("annotations", 10, MAP), ("log_path", 11, S), ("stdin", 12, BOOL),
                        ("stdin_once", 13, BOOL), ("tty", 14, BOOL), ("linux", 15, "LinuxContainerConfig")],
    "CreateContainerRequest": [("pod_sandbox_id", 1, S), ("config", 2, "ContainerConfig"),
                               ("sandbox_config", 3, "PodSandboxConfig")],
    "ContainerStatus": [("id", 1, S), ("metadata", 2, "ContainerMetadata"), ("state", 3, I32),
                        ("created_at", 4, I64), ("started_at", 5, I64), ("finished_at", 6, I64),
                        ("exit_code", 7, I32), ("image", 8, "ImageSpec"), ("image_ref", 9, S), ("reason", 10, S),
                        ("message", 11, S), ("labels", 12, MAP), ("annotations", 13, MAP), ("log_path", 15, S)],
    "ContainerStatusResponse": [("status", 1, "ContainerStatus"), ("info", 2, MAP)],
    "Container": [("id", 1, S), ("pod_sandbox_id", 2, S), ("metadata", 3, "ContainerMetadata"),
                  ("image", 4, "ImageSpec"), ("image_ref", 5, S), ("state", 6, I32), ("created_at", 7, I64),
                  ("labels", 8, MAP), ("annotations", 9, MAP)],
    "ListContainersResponse": [("containers", 1, "*Container")],
    "ExecSyncRequest": [("container_id", 1, S), ("cmd", 2, "*string"), ("timeout", 3, I64)],
    "ExecSyncResponse": [("stdout", 1, B), ("stderr", 2, B), ("exit_code", 3, I32)],
    "ExecRequest": [("container_id", 1, S), ("cmd", 2, "*string"), ("tty", 3, BOOL), ("stdin", 4, BOOL),
                    ("stdout", 5, BOOL), ("stderr", 6, BOOL)],
    "AttachRequest": [("container_id", 1, S), ("stdin", 2, BOOL), ("tty", 3, BOOL), ("stdout", 4, BOOL),
                      ("stderr", 5, BOOL)],
    "PortForwardRequest": [("pod_sandbox_id", 1, S), ("port", 2, "*int32")],
    "ContainerAttributes": [("id", 1, S)],
    "CpuUsage": [("timestamp", 1, I64), ("usage_core_nano_seconds", 2, "UInt64Value"),
                 ("usage_nano_cores", 3, "UInt64Value")],
    "MemoryUsage": [("timestamp", 1, I64), ("working_set_bytes", 2, "UInt64Value"),
                    ("available_bytes", 3, "UInt64Value"), ("usage_bytes", 4, "UInt64Value")],
    "ContainerStats": [("attributes", 1, "ContainerAttributes"), ("cpu", 2, "CpuUsage"), ("memory", 3, "MemoryUsage")],
    "ContainerStatsResponse": [("stats", 1, "ContainerStats")],
    "AuthConfig": [("username", 1, S), ("password", 2, S), ("auth", 3, S), ("server_address", 4, S),
                   ("identity_token", 5, S), ("registry_token", 6, S)],
    "PullImageRequest": [("image", 1, "ImageSpec"), ("auth", 2, "AuthConfig"),
                         ("sandbox_config", 3, "PodSandboxConfig")],
    "Image": [("id", 1, S), ("repo_tags", 2, "*string"), ("repo_digests", 3, "*string"), ("size", 4, U64),
              ("uid", 5, "Int64Value"), ("username", 6, S), ("pinned", 8, BOOL)],
    "ImageStatusResponse": [("image", 1, "Image"), ("info", 2, MAP)],
    "ListImagesResponse": [("images", 1, "*Image")],
    "FilesystemUsage": [("timestamp", 1, I64), ("used_bytes", 3, "UInt64Value"), ("inodes_used", 4, "UInt64Value")],
    "ImageFsInfoResponse": [("image_filesystems", 1, "*FilesystemUsage")],
}
SCALARS = {S: descriptor_pb2.FieldDescriptorProto.TYPE_STRING, B: descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
           BOOL: descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, I32: descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
           I64: descriptor_pb2.FieldDescriptorProto.TYPE_INT64, U32: descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
           U64: descriptor_pb2.FieldDescriptorProto.TYPE_UINT64}


def _classes() -> dict[str, type]:
    """Message classes for SCHEMA, made by Google's protobuf from a descriptor built here."""
    proto = descriptor_pb2.FileDescriptorProto(name="cri_subset.proto", package="cri", syntax="proto3")
    for name, fields in SCHEMA.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            field = message.field.add(name=field_name, number=number,
                                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if kind == MAP:
                entry = message.nested_type.add(name=f"{field_name.title().replace('_', '')}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=SCALARS[S],
                                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=SCALARS[S],
                                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
                field.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".cri.{name}.{entry.name}"
                continue
            if kind.startswith("*"):
                field.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                kind = kind[1:]
            if kind in SCALARS:
                field.type = SCALARS[kind]
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".cri.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"cri.{name}")) for name in SCHEMA}


PB = _classes()


def parse(kind: str, data: bytes):
    return PB[kind].FromString(data)


SANDBOX = SandboxConfig(
    name="web", namespace="shop", uid="0f0e", attempt=2, hostname="web-0", log_directory="/var/log/pods/shop_web_0f0e",
    share_process_namespace=True, dns=DNSConfig(["10.43.0.10"], ["shop.svc.cluster.local"], ["ndots:5"]),
    port_mappings=[PortMapping(80, 8080, "TCP", "127.0.0.1"), PortMapping(53, 5353, "UDP")],
    labels={"io.kubernetes.pod.name": "web"}, annotations={"kubernetes.io/config.seen": "now"},
    cgroup_parent="/kubelite/pod0f0e", sysctls={"net.core.somaxconn": "1024"})


# ---- byte-exact requests

def test_small_requests_are_byte_exact():
    assert criproto.version_request() == b"\x0a\x02v1"
    assert criproto.container_request("abc") == b"\x0a\x03abc"
    assert criproto.stop_container_request("abc", 10) == b"\x0a\x03abc\x10\x0a"
    assert criproto.stop_container_request("abc", 0.2) == b"\x0a\x03abc\x10\x01"
    assert criproto.stop_container_request("abc", 0) == b"\x0a\x03abc"
    assert criproto.exec_sync_request("c", ["ls", "-l"]) == b"\x0a\x01c\x12\x02ls\x12\x02-l"
    assert criproto.port_forward_request("s", [80, 8080]) == b"\x0a\x01s\x12\x03\x50\x90\x3f"
    assert criproto.image_request("busybox") == b"\x0a\x09\x0a\x07busybox"
    assert criproto.list_images_request() == b"" and criproto.image_fs_info_request() == b""
    assert criproto.exec_request("c", ["sh"], tty=True, stdin=True) == b"\x0a\x01c\x12\x02sh\x18\x01\x20\x01\x28\x01"
    assert criproto.attach_request("c", stdin=False, tty=False) == b"\x0a\x01c\x20\x01\x28\x01"


def test_filters_send_their_wrappers_even_for_zero_states():
    assert criproto.list_containers_request() == b""
    assert criproto.list_containers_request(state=ContainerState.CREATED) == b"\x0a\x02\x12\x00"
    assert criproto.list_containers_request("p", ContainerState.EXITED) == b"\x0a\x07\x12\x02\x08\x02\x1a\x01p"
    assert criproto.list_pod_sandbox_request() == b""
    assert criproto.list_pod_sandbox_request(SandboxState.READY) == b"\x0a\x02\x12\x00"
    assert criproto.list_pod_sandbox_request(SandboxState.NOTREADY) == b"\x0a\x04\x12\x02\x08\x01"


def test_pull_request_carries_the_credentials():
    assert criproto.pull_image_request("r/x:1") == b"\x0a\x07\x0a\x05r/x:1"
    parsed = parse("PullImageRequest", criproto.pull_image_request("r/x:1", AuthConfig("me", "pw", "tok")))
    assert (parsed.image.image, parsed.auth.username, parsed.auth.password, parsed.auth.identity_token) == \
        ("r/x:1", "me", "pw", "tok")
    assert parsed.auth.server_address == ""


# ---- requests as Google's protobuf reads them

def test_sandbox_config_as_protobuf_reads_it():
    request = parse("RunPodSandboxRequest", criproto.run_pod_sandbox_request(SANDBOX))
    config = request.config
    assert (config.metadata.name, config.metadata.uid, config.metadata.namespace, config.metadata.attempt) == \
        ("web", "0f0e", "shop", 2)
    assert (config.hostname, config.log_directory) == ("web-0", "/var/log/pods/shop_web_0f0e")
    assert list(config.dns_config.servers) == ["10.43.0.10"] and list(config.dns_config.options) == ["ndots:5"]
    assert [(p.protocol, p.container_port, p.host_port, p.host_ip) for p in config.port_mappings] == \
        [(0, 80, 8080, "127.0.0.1"), (1, 53, 5353, "")]
    assert dict(config.labels) == SANDBOX.labels
    assert dict(config.annotations)["kubernetes.io/config.seen"] == "now"
    assert criproto.SANDBOX_CONFIG_ANNOTATION in config.annotations
    assert config.linux.cgroup_parent == "/kubelite/pod0f0e"
    assert dict(config.linux.sysctls) == {"net.core.somaxconn": "1024"}
    namespaces = config.linux.security_context.namespace_options
    assert (namespaces.network, namespaces.pid, namespaces.ipc) == (criproto.POD, criproto.POD, criproto.POD)
    assert not config.linux.security_context.privileged
    privileged = dataclasses.replace(SANDBOX, privileged=True)
    assert parse("RunPodSandboxRequest", criproto.run_pod_sandbox_request(privileged)).config.linux \
        .security_context.privileged


def test_host_namespaces_and_no_dns():
    host = SandboxConfig("h", "ns", "u", hostname="ignored", host_network=True, host_pid=True, host_ipc=True)
    config = parse("RunPodSandboxRequest", criproto.run_pod_sandbox_request(host)).config
    assert config.hostname == "" and not config.HasField("dns_config")
    namespaces = config.linux.security_context.namespace_options
    assert (namespaces.network, namespaces.pid, namespaces.ipc) == (criproto.NODE, criproto.NODE, criproto.NODE)
    private = parse("RunPodSandboxRequest", criproto.run_pod_sandbox_request(SandboxConfig("p", "ns", "u"))).config
    assert private.linux.security_context.namespace_options.pid == criproto.CONTAINER


@dataclass
class NoRootfs:
    """The unpacked image a ContainerConfig carries; a CRI runtime does not use it."""

    layer_dirs: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


CONTAINER = ContainerConfig(
    name="app", image=NoRootfs(), image_name="registry.local/app:1", attempt=3, command=["/bin/app"],
    args=["-v", "--x=y"], env={"A": "1", "EMPTY": ""}, working_dir="/srv",
    mounts=[Mount("/host/data", "/data", readonly=True, propagation=MountPropagation.HOST_TO_CONTAINER),
            Mount("/host/rw", "/rw", propagation=MountPropagation.BIDIRECTIONAL)],
    devices=[Device("/dev/fuse")], tty=True, stdin=True, stdin_once=True, log_path="app/3.log",
    resources=LinuxResources(cpu_shares=512, cpu_quota=50_000, cpu_period=100_000, memory_limit_in_bytes=64 << 20,
                             oom_score_adj=-997, cpuset_cpus="0-1", hugepage_limits={"2MB": 4 << 20, "1GB": 0}),
    security=SecurityContext(run_as_user=0, run_as_group=3000, supplemental_groups=[4000, -1], privileged=False,
                             capabilities=Capabilities(["NET_ADMIN"], ["ALL"]), readonly_rootfs=True,
                             no_new_privs=True, masked_paths=["/proc/kcore"], readonly_paths=["/proc/sys"],
                             seccomp=SecurityProfile("Localhost", "/var/lib/kubelite/seccomp/p.json")),
    labels={"io.kubernetes.container.name": "app"}, annotations={"io.kubernetes.container.hash": "abc"})


def test_container_config_as_protobuf_reads_it():
    request = parse("CreateContainerRequest", criproto.create_container_request("sb1", CONTAINER, SANDBOX))
    config = request.config
    assert request.pod_sandbox_id == "sb1" and request.sandbox_config.metadata.name == "web"
    assert (config.metadata.name, config.metadata.attempt, config.image.image) == ("app", 3, "registry.local/app:1")
    assert list(config.command) == ["/bin/app"] and list(config.args) == ["-v", "--x=y"]
    assert [(e.key, e.value) for e in config.envs] == [("A", "1"), ("EMPTY", "")]
    assert config.working_dir == "/srv" and config.log_path == "app/3.log"
    assert [(m.container_path, m.host_path, m.readonly, m.propagation) for m in config.mounts] == \
        [("/data", "/host/data", True, 1), ("/rw", "/host/rw", False, 2)]
    assert [(d.container_path, d.host_path, d.permissions) for d in config.devices] == \
        [("/dev/fuse", "/dev/fuse", "rwm")]
    assert (config.tty, config.stdin, config.stdin_once) == (True, True, True)
    assert dict(config.labels) == CONTAINER.labels
    assert dict(config.annotations) == {**CONTAINER.annotations, criproto.SANDBOX_ID_ANNOTATION: "sb1",
                                        criproto.IMAGE_ANNOTATION: "registry.local/app:1",
                                        criproto.TTY_ANNOTATION: "true"}
    resources = config.linux.resources
    assert (resources.cpu_period, resources.cpu_quota, resources.cpu_shares, resources.memory_limit_in_bytes,
            resources.oom_score_adj, resources.cpuset_cpus) == (100_000, 50_000, 512, 64 << 20, -997, "0-1")
    assert [(h.page_size, h.limit) for h in resources.hugepage_limits] == [("2MB", 4 << 20), ("1GB", 0)]
    security = config.linux.security_context
    assert security.HasField("run_as_user") and security.run_as_user.value == 0
    assert security.run_as_group.value == 3000 and list(security.supplemental_groups) == [4000, -1]
    assert list(security.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(security.capabilities.drop_capabilities) == ["ALL"]
    assert (security.readonly_rootfs, security.no_new_privs, security.privileged) == (True, True, False)
    assert list(security.masked_paths) == ["/proc/kcore"] and list(security.readonly_paths) == ["/proc/sys"]
    assert (security.seccomp.profile_type, security.seccomp.localhost_ref) == (2, "/var/lib/kubelite/seccomp/p.json")
    assert security.namespace_options.pid == criproto.POD


def test_unset_user_and_default_profiles():
    plain = ContainerConfig("c", NoRootfs(), "img")
    security = parse("CreateContainerRequest", criproto.create_container_request("s", plain, SANDBOX)) \
        .config.linux.security_context
    assert not security.HasField("run_as_user") and not security.HasField("run_as_group")
    assert security.HasField("seccomp") and security.seccomp.profile_type == 1
    default = ContainerConfig("c", NoRootfs(), "img",
                              security=SecurityContext(seccomp=SecurityProfile("RuntimeDefault")))
    security = parse("CreateContainerRequest", criproto.create_container_request("s", default, SANDBOX)) \
        .config.linux.security_context
    assert security.HasField("seccomp") and security.seccomp.profile_type == 0


def test_an_ephemeral_container_joins_its_targets_pid_namespace():
    private = SandboxConfig("p", "ns", "u")
    debugger = ContainerConfig("dbg", NoRootfs(), "img", security=SecurityContext(pid_target="c0ffee"))
    namespaces = parse("CreateContainerRequest", criproto.create_container_request("s", debugger, private)) \
        .config.linux.security_context.namespace_options
    assert (namespaces.pid, namespaces.target_id) == (criproto.TARGET, "c0ffee")
    plain = ContainerConfig("c", NoRootfs(), "img")
    namespaces = parse("CreateContainerRequest", criproto.create_container_request("s", plain, private)) \
        .config.linux.security_context.namespace_options
    assert (namespaces.pid, namespaces.target_id) == (criproto.CONTAINER, "")


# ---- replies as Google's protobuf writes them, and round trips

def test_sandbox_config_round_trips_through_the_status():
    sent = parse("RunPodSandboxRequest", criproto.run_pod_sandbox_request(SANDBOX)).config
    reply = PB["PodSandboxStatusResponse"](info={"k": "v"})
    status = reply.status
    status.id, status.state, status.created_at, status.network.ip = "sb1", 1, 1_700_000_000_000_000_000, "10.42.0.7"
    status.metadata.CopyFrom(sent.metadata)
    status.labels.update(sent.labels)
    status.annotations.update(sent.annotations)
    decoded = criproto.decode_pod_sandbox_status(reply.SerializeToString())
    assert decoded.config == SANDBOX
    assert (decoded.id, decoded.state, decoded.created_at, decoded.ip) == \
        ("sb1", SandboxState.NOTREADY, 1_700_000_000_000_000_000, "10.42.0.7")


def test_sandbox_made_elsewhere_decodes_from_its_metadata():
    reply = PB["ListPodSandboxResponse"]()
    item = reply.items.add(id="x", state=0, created_at=5)
    item.metadata.name, item.metadata.uid, item.metadata.namespace = "n", "u", "ns"
    item.labels["a"] = "b"
    [decoded] = criproto.decode_list_pod_sandbox(reply.SerializeToString())
    assert decoded.config == SandboxConfig("n", "ns", "u", labels={"a": "b"})
    assert decoded.state == SandboxState.READY and decoded.ip == ""


def test_container_status_round_trips_what_we_sent():
    sent = parse("CreateContainerRequest", criproto.create_container_request("sb1", CONTAINER, SANDBOX)).config
    reply = PB["ContainerStatusResponse"]()
    status = reply.status
    status.id, status.state, status.exit_code, status.reason = "c1", 2, -1, "Error"
    status.created_at, status.started_at, status.finished_at = 1, 2, 3
    status.metadata.CopyFrom(sent.metadata)
    status.image.image = "registry.local/app:latest-tag-first"
    status.labels.update(sent.labels)
    status.annotations.update(sent.annotations)
    status.log_path, status.message = "/var/log/pods/x/app/3.log", "bye"
    data = reply.SerializeToString()
    decoded = criproto.decode_container_status(data)
    assert (decoded.id, decoded.sandbox_id, decoded.name, decoded.attempt) == ("c1", "sb1", "app", 3)
    assert (decoded.state, decoded.exit_code, decoded.reason, decoded.message) == \
        (ContainerState.EXITED, -1, "Error", "bye")
    assert (decoded.created_at, decoded.started_at, decoded.finished_at) == (1, 2, 3)
    assert decoded.image == "registry.local/app:1"
    assert decoded.labels == CONTAINER.labels and decoded.annotations == CONTAINER.annotations
    assert decoded.log_path == "/var/log/pods/x/app/3.log" and decoded.pid == 0
    assert criproto.decode_container_tty(data)


def test_container_list_and_unknown_states():
    reply = PB["ListContainersResponse"]()
    first = reply.containers.add(id="a", pod_sandbox_id="s", state=1, created_at=9)
    first.metadata.name, first.metadata.attempt = "one", 1
    first.image.image = "busybox"
    reply.containers.add(id="b", pod_sandbox_id="s", state=7)
    one, two = criproto.decode_list_containers(reply.SerializeToString())
    assert (one.id, one.sandbox_id, one.name, one.attempt, one.state, one.created_at, one.image) == \
        ("a", "s", "one", 1, ContainerState.RUNNING, 9, "busybox")
    assert two.state == ContainerState.UNKNOWN


def test_exec_stats_version_and_url_replies():
    exec_reply = PB["ExecSyncResponse"](stdout=b"\x00out", stderr=b"err", exit_code=-2).SerializeToString()
    assert criproto.decode_exec_sync(exec_reply) == (-2, b"\x00out", b"err")
    assert criproto.decode_exec_sync(b"") == (0, b"", b"")
    stats = PB["ContainerStatsResponse"]()
    stats.stats.attributes.id = "c1"
    stats.stats.cpu.timestamp = 77
    stats.stats.cpu.usage_core_nano_seconds.value = 2 ** 40
    stats.stats.memory.working_set_bytes.value = 1000
    stats.stats.memory.usage_bytes.value = 3000
    decoded = criproto.decode_container_stats(stats.SerializeToString())
    assert (decoded.container_id, decoded.timestamp, decoded.cpu_usage_core_nanoseconds,
            decoded.memory_working_set_bytes, decoded.memory_usage_bytes) == ("c1", 77, 2 ** 40, 1000, 3000)
    version = PB["VersionResponse"](version="0.1.0", runtime_name="containerd", runtime_version="1.6.20",
                                    runtime_api_version="v1")
    assert criproto.decode_version(version.SerializeToString()) == criproto.RuntimeVersion("containerd", "1.6.20")
    assert criproto.decode_url(b"\x0a\x04http") == "http"


def test_images_decode_with_their_user():
    status = PB["ImageStatusResponse"]()
    image = status.image
    image.id, image.size = "sha256:ab", 1234
    image.repo_tags.extend(["r/x:1", "r/x:latest"])
    image.repo_digests.append("r/x@sha256:cd")
    image.uid.value = 0
    decoded = criproto.decode_image_status(status.SerializeToString())
    assert decoded is not None
    assert (decoded.id, decoded.names, decoded.digests, decoded.size, decoded.config, decoded.layer_dirs) == \
        ("sha256:ab", ["r/x:1", "r/x:latest"], ["r/x@sha256:cd"], 1234, {"User": "0"}, [])
    image.ClearField("uid")
    image.username = "nobody"
    assert criproto.decode_image_status(status.SerializeToString()).config == {"User": "nobody"}
    image.username = ""
    assert criproto.decode_image_status(status.SerializeToString()).config == {}
    assert criproto.decode_image_status(PB["ImageStatusResponse"]().SerializeToString()) is None
    listed = PB["ListImagesResponse"]()
    listed.images.add(id="sha256:1", size=1)
    listed.images.add(id="sha256:2", size=2, pinned=True)
    assert [i.id for i in criproto.decode_list_images(listed.SerializeToString())] == ["sha256:1", "sha256:2"]
    fs = PB["ImageFsInfoResponse"]()
    fs.image_filesystems.add(timestamp=1).used_bytes.value = 100
    fs.image_filesystems.add(timestamp=1).used_bytes.value = 23
    assert criproto.decode_image_fs_info(fs.SerializeToString()) == 123


# ---- robustness

def test_unknown_fields_are_skipped_at_every_level():
    w = Writer()
    status = w.begin(1)
    w.string(1, "c1")
    w.varint(3, 1)
    user = w.begin(18)
    linux = w.begin(1)
    w.varint(1, 1000)
    w.end(linux)
    w.end(user)
    w.string(19, "mirror.local")
    w.double(40, 1.5)
    w.length_delimited(41, b"\xff\xfe")
    w.end(status)
    info = w.begin(2)
    w.string(1, "info")
    w.string(2, "{}")
    w.end(info)
    w.varint(99, 12345)
    data = w.getvalue() + b"\xc5\x06\x01\x02\x03\x04"
    decoded = criproto.decode_container_status(data)
    assert (decoded.id, decoded.state) == ("c1", ContainerState.RUNNING)


def test_malformed_replies_raise_decode_errors():
    with pytest.raises(criproto.DecodeError):
        criproto.decode_container_status(b"\x0a\x05\x0a")
    with pytest.raises(criproto.DecodeError):
        criproto.decode_version(b"\x10\x01")
    with pytest.raises(criproto.DecodeError):
        criproto.decode_pod_sandbox_status(b"\x0a\x03\x12\x01\x08")
    bad_json = PB["PodSandboxStatusResponse"]()
    bad_json.status.annotations[criproto.SANDBOX_CONFIG_ANNOTATION] = "{not json"
    with pytest.raises(criproto.DecodeError):
        criproto.decode_pod_sandbox_status(bad_json.SerializeToString())
