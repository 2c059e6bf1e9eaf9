"""The OCI spec builder and rootfs user lookup: Kubernetes' combination rules without runc."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubelite.kubelet.runtime.base import (
    Capabilities,
    ContainerConfig,
    LinuxResources,
    Mount,
    MountPropagation,
    SecurityContext,
    SecurityProfile,
)
from kubelite.kubelet.runtime.bundle import (
    CAPABILITY_NAMES,
    DEFAULT_CAPABILITIES,
    HostInfo,
    SandboxContext,
    UserIds,
    build_spec,
    capabilities,
    exec_process,
    merge_env,
    process_args,
    stop_signal,
)
from kubelite.kubelet.runtime.rootfs import read_in_root, resolve_user

ALL = list(CAPABILITY_NAMES)
HOST = HostInfo(capabilities=[c for c in ALL if c != "CAP_SYS_RESOURCE"], nofile=(20000, 20000),
                swap_accounting=True)


@dataclass
class Image:
    """A RootfsImage with no layers: only its config matters here."""

    layer_dirs: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def sandbox() -> SandboxContext:
    """A pod with its own namespaces, shared files and /dev/shm."""
    return SandboxContext(hostname="web-0", namespaces={"net": "/run/n", "ipc": "/run/i", "uts": "/run/u", "pid": ""},
                          files={"/etc/hosts": "/s/hosts", "/etc/resolv.conf": "/s/resolv.conf"}, shm="/run/shm/x",
                          sandbox_id="sb", pod_name="web-0", pod_namespace="default", pod_uid="uid")


def spec(config: ContainerConfig, host: HostInfo = HOST, **kwargs: Any) -> dict[str, Any]:
    """The spec for a container of that pod, running as 1000:1000."""
    return build_spec(config, sandbox(), UserIds(1000, 1000, [1000]), host, cgroups_path="/kubelite/poduid/c",
                      **kwargs)


@pytest.mark.parametrize(("command", "args", "image", "expected"), [
    ([], [], {"Entrypoint": ["/ep"], "Cmd": ["a"]}, ["/ep", "a"]),
    (["/cmd"], [], {"Entrypoint": ["/ep"], "Cmd": ["a"]}, ["/cmd"]),
    ([], ["b"], {"Entrypoint": ["/ep"], "Cmd": ["a"]}, ["/ep", "b"]),
    (["/cmd"], ["b"], {"Entrypoint": ["/ep"], "Cmd": ["a"]}, ["/cmd", "b"]),
    ([], [], {"Cmd": ["sh"]}, ["sh"]),
    ([], ["x"], {}, ["x"]),
])
def test_command_and_args_replace_entrypoint_and_cmd(command: list[str], args: list[str], image: dict[str, Any],
                                                     expected: list[str]) -> None:
    assert process_args(command, args, image) == expected


def test_nothing_to_run_is_an_error() -> None:
    with pytest.raises(ValueError):
        process_args([], [], {})


def test_env_image_then_container_with_defaults() -> None:
    env = merge_env(["PATH=/image/bin", "A=image", "B=image"], {"B": "pod", "C": "pod"}, "web-0")
    assert env == ["PATH=/image/bin", "HOSTNAME=web-0", "A=image", "B=pod", "C=pod"]
    assert merge_env([], {}, "h")[0].startswith("PATH=/usr/local/sbin")


def test_capabilities_add_drop_all_and_bounding() -> None:
    def caps(add: list[str] = (), drop: list[str] = (), privileged: bool = False) -> list[str]:
        return capabilities(SecurityContext(privileged=privileged, capabilities=Capabilities(list(add), list(drop))),
                            HOST.capabilities)

    assert set(caps()) == set(DEFAULT_CAPABILITIES)
    assert "CAP_NET_ADMIN" in caps(add=["NET_ADMIN"]) and "CAP_CHOWN" not in caps(drop=["chown"])
    assert caps(drop=["ALL"], add=["NET_BIND_SERVICE"]) == ["CAP_NET_BIND_SERVICE"]
    everything_but_chown = caps(add=["ALL"], drop=["CAP_CHOWN"])
    assert "CAP_CHOWN" not in everything_but_chown and "CAP_SYS_ADMIN" in everything_but_chown
    assert "CAP_SYS_RESOURCE" not in caps(add=["SYS_RESOURCE"]), "never more than the agent's bounding set"
    assert caps(privileged=True) == HOST.capabilities
    with pytest.raises(ValueError):
        caps(add=["NOT_A_CAP"])


def test_spec_for_a_plain_container() -> None:
    config = ContainerConfig(name="app", image=Image(config={"config": {"Entrypoint": ["/app"], "Env": ["X=1"],
                                                                        "WorkingDir": "/srv"}}),
                             args=["--port", "80"], env={"Y": "2"}, tty=False,
                             resources=LinuxResources(cpu_shares=256, cpu_quota=50000, cpu_period=100000,
                                                      memory_limit_in_bytes=64 << 20, oom_score_adj=-997))
    result = spec(config)
    process = result["process"]
    assert process["args"] == ["/app", "--port", "80"] and process["cwd"] == "/srv"
    assert "X=1" in process["env"] and "Y=2" in process["env"] and "HOSTNAME=web-0" in process["env"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert process["oomScoreAdj"] == 0, "negative scores are clamped (no CAP_SYS_RESOURCE)"
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000}]
    assert process["noNewPrivileges"] is False
    linux = result["linux"]
    assert linux["cgroupsPath"] == "/kubelite/poduid/c"
    assert linux["resources"]["cpu"] == {"shares": 256, "quota": 50000, "period": 100000}
    assert linux["resources"]["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert {"type": "network", "path": "/run/n"} in linux["namespaces"]
    assert {"type": "pid"} in linux["namespaces"] and {"type": "mount"} in linux["namespaces"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    mounts = {m["destination"]: m for m in result["mounts"]}
    assert mounts["/dev/shm"]["source"] == "/run/shm/x" and mounts["/etc/hosts"]["source"] == "/s/hosts"
    assert "ro" in mounts["/sys"]["options"]
    assert result["root"] == {"path": "rootfs", "readonly": False}
    assert result["annotations"]["io.kubernetes.cri.sandbox-id"] == "sb"


def test_spec_without_swap_accounting_sets_no_swap() -> None:
    host = HostInfo(capabilities=ALL, nofile=(1024, 4096))
    config = ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}),
                             resources=LinuxResources(memory_limit_in_bytes=1 << 20, oom_score_adj=1500))
    result = spec(config, host=host)
    assert result["linux"]["resources"]["memory"] == {"limit": 1 << 20}
    assert result["process"]["oomScoreAdj"] == 1000


def test_the_spec_limits_huge_pages_only_where_the_host_has_the_controller() -> None:
    config = ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}),
                             resources=LinuxResources(hugepage_limits={"2MB": 4 << 20, "1GB": 0}))
    host = HostInfo(capabilities=[], nofile=(1024, 1024), hugetlb=True)
    assert spec(config, host=host)["linux"]["resources"]["hugepageLimits"] == [
        {"pageSize": "2MB", "limit": 4 << 20}, {"pageSize": "1GB", "limit": 0}]
    without = HostInfo(capabilities=[], nofile=(1024, 1024))
    assert "hugepageLimits" not in spec(config, host=without)["linux"]["resources"]


def test_spec_security_and_mounts() -> None:
    config = ContainerConfig(
        name="a", image=Image(config={"Cmd": ["x"]}),
        mounts=[Mount("/host/data", "/data/sub", readonly=True), Mount("/host/hosts", "/etc/hosts"),
                Mount("/host/root", "/data", propagation=MountPropagation.HOST_TO_CONTAINER)],
        security=SecurityContext(readonly_rootfs=True, no_new_privs=True, masked_paths=[], readonly_paths=["/x"]))
    result = spec(config)
    assert result["root"]["readonly"] is True and result["process"]["noNewPrivileges"] is True
    assert result["linux"]["maskedPaths"] == [] and result["linux"]["readonlyPaths"] == ["/x"]
    assert result["linux"]["rootfsPropagation"] == "rslave"
    binds = [(m["destination"], m["source"], m["options"]) for m in result["mounts"] if m["type"] == "bind"]
    assert ("/etc/hosts", "/host/hosts", ["rbind", "rprivate", "rw"]) in binds, "the container's own mount wins"
    assert ("/etc/resolv.conf", "/s/resolv.conf", ["rbind", "rprivate", "ro"]) in binds
    destinations = [b[0] for b in binds]
    assert destinations.index("/data") < destinations.index("/data/sub"), "parents before children"
    assert ("/data/sub", "/host/data", ["rbind", "rprivate", "ro"]) in binds
    with pytest.raises(ValueError):
        spec(ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}),
                             mounts=[Mount("/h", "/c", propagation=MountPropagation.BIDIRECTIONAL)]))


def test_spec_privileged_and_devices() -> None:
    device = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0,
              "access": "rw"}
    plain = spec(ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]})), devices=[device])
    assert plain["linux"]["devices"] == [{k: v for k, v in device.items() if k != "access"}]
    assert {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"} in plain["linux"]["resources"][
        "devices"]
    privileged = spec(ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}),
                                      security=SecurityContext(privileged=True, no_new_privs=True)), devices=[device])
    assert privileged["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert privileged["linux"]["maskedPaths"] == [] and privileged["linux"]["readonlyPaths"] == []
    assert privileged["process"]["capabilities"]["bounding"] == HOST.capabilities
    assert privileged["process"]["noNewPrivileges"] is False
    assert "rw" in {m["destination"]: m for m in privileged["mounts"]}["/sys"]["options"]


def _denied(profile: dict[str, Any]) -> set[str]:
    """Syscalls the profile refuses whatever their arguments."""
    return {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO" and not rule.get("args")
            for name in rule["names"]}


def test_runtime_default_seccomp_follows_capabilities() -> None:
    def profile(**security: Any) -> dict[str, Any] | None:
        config = ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}),
                                 security=SecurityContext(seccomp=SecurityProfile("RuntimeDefault"), **security))
        return spec(config)["linux"].get("seccomp")

    plain = profile()
    assert plain is not None and plain["defaultAction"] == "SCMP_ACT_ALLOW"
    assert {"keyctl", "userfaultfd", "kexec_load", "mount", "unshare", "setns", "reboot", "bpf"} <= _denied(plain)
    assert not {"read", "execve", "clone", "ptrace", "chroot"} & _denied(plain)
    namespaced = [r for r in plain["syscalls"] if r["names"] == ["clone"]]
    assert {r["args"][0]["value"] for r in namespaced} >= {0x10000000, 0x40000000}, "clone(CLONE_NEWUSER/NEWNET)"
    assert all(r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" for r in namespaced)
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in plain["syscalls"]
    admin = profile(capabilities=Capabilities(add=["SYS_ADMIN"]))
    assert admin is not None and "mount" not in _denied(admin) and "keyctl" in _denied(admin)
    assert not [r for r in admin["syscalls"] if r["names"] == ["clone"]]
    assert profile(privileged=True) is None, "privileged containers run unconfined"
    assert "seccomp" not in spec(ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]})))["linux"]


def test_localhost_seccomp_profile_in_docker_format() -> None:
    docker = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
              "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                          {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]}],
              "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                           {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                           {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
                           {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    config = ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}),
                             security=SecurityContext(seccomp=SecurityProfile("Localhost", "/p.json")))
    linux = spec(config, seccomp_profile=docker)["linux"]["seccomp"]
    assert linux["defaultAction"] == "SCMP_ACT_ERRNO" and linux["defaultErrnoRet"] == 1
    assert linux["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    names = [rule["names"] for rule in linux["syscalls"]]
    assert ["read", "write"] in names and ["mkdir"] in names
    assert ["mount"] not in names, "needs CAP_SYS_ADMIN, not among the default capabilities"
    assert ["chroot"] not in names, "excluded when CAP_SYS_CHROOT is held, as it is by default"
    assert {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13} in linux["syscalls"]


def test_exec_process_keeps_user_and_env() -> None:
    process = spec(ContainerConfig(name="a", image=Image(config={"Cmd": ["x"]}), resources=LinuxResources(
        oom_score_adj=5)))["process"]
    result = exec_process(process, ["ls", "-l"], tty=True)
    assert result["args"] == ["ls", "-l"] and result["terminal"] is True and "TERM=xterm" in result["env"]
    assert result["user"] == process["user"] and "oomScoreAdj" not in result
    assert process["args"] == ["x"], "the container's own process is left alone"


def test_stop_signal_from_image() -> None:
    assert stop_signal({}) == 15
    assert stop_signal({"StopSignal": "SIGQUIT"}) == 3
    assert stop_signal({"StopSignal": "INT"}) == 2
    assert stop_signal({"StopSignal": "9"}) == 9


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A rootfs with just /etc/passwd and /etc/group."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n# comment\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:app,other\nstaff:x:50\n")
    return tmp_path


def test_user_from_image_and_security_context(root: Path) -> None:
    assert resolve_user(root, "", SecurityContext()) == UserIds(0, 0, [0])
    assert resolve_user(root, "app", SecurityContext()) == UserIds(1000, 1001, [1001, 10])
    assert resolve_user(root, "app:wheel", SecurityContext()) == UserIds(1000, 10, [10])
    assert resolve_user(root, "1000:50", SecurityContext()) == UserIds(1000, 50, [50, 10])
    assert resolve_user(root, "4242", SecurityContext()) == UserIds(4242, 0, [0]), "unknown uid: gid 0"
    override = SecurityContext(run_as_user=1000, run_as_group=7, supplemental_groups=[99, 10])
    assert resolve_user(root, "root", override) == UserIds(1000, 7, [7, 10, 99])
    assert resolve_user(root, "", SecurityContext(run_as_username="app")).uid == 1000
    with pytest.raises(ValueError):
        resolve_user(root, "ghost", SecurityContext())
    with pytest.raises(ValueError):
        resolve_user(root, "app:ghosts", SecurityContext())


def test_rootfs_files_never_lead_outside(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret"
    outside.write_text("host secret")
    (root / "etc" / "shadow").symlink_to(outside)
    (root / "etc" / "relative").symlink_to("passwd")
    assert read_in_root(root, "/etc/shadow") == ""
    assert read_in_root(root, "/etc/relative").startswith("root:")
    assert read_in_root(root, "/etc/missing") == ""
