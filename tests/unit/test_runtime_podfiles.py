"""The files a pod's containers share and the sysctl rules, without creating a pod."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelite.kubelet.runtime.base import DNSConfig, SandboxConfig
from kubelite.kubelet.runtime.podfiles import check_sysctls, hosts_file, resolv_conf, write_files


def config(**kwargs: object) -> SandboxConfig:
    """A pod named web-0 with the given settings."""
    return SandboxConfig(name="web-0", namespace="default", uid="u", **kwargs)


def test_resolv_conf_from_dns_config() -> None:
    dns = DNSConfig(servers=["10.96.0.10", "10.96.0.11"], searches=["default.svc.cluster.local"], options=["ndots:5"])
    assert resolv_conf(config(dns=dns)) == ("search default.svc.cluster.local\nnameserver 10.96.0.10\n"
                                            "nameserver 10.96.0.11\noptions ndots:5\n")
    assert resolv_conf(config(dns=DNSConfig(servers=["1.1.1.1"]))) == "nameserver 1.1.1.1\n"


def test_hosts_file_names_the_pod() -> None:
    hosts = hosts_file(config(), "web-0", "10.42.0.7")
    assert hosts.startswith("127.0.0.1\tlocalhost\n") and hosts.endswith("10.42.0.7\tweb-0\n")
    assert "web-0" not in hosts_file(config(), "web-0", "")


def test_files_are_written_for_their_mount_points(tmp_path: Path) -> None:
    files = write_files(tmp_path, config(dns=DNSConfig(servers=["10.0.0.1"])), "web-0", "10.42.0.7")
    assert sorted(files) == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    assert Path(files["/etc/hostname"]).read_text() == "web-0\n"
    assert Path(files["/etc/resolv.conf"]).read_text() == "nameserver 10.0.0.1\n"


@pytest.mark.parametrize(("sysctls", "kwargs", "allowed"), [
    ({"net.ipv4.ip_forward": "1", "net/core/somaxconn": "1024"}, {}, True),
    ({"kernel.shmmax": "1", "kernel.msgmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.msg_max": "1"}, {}, True),
    ({"kernel.panic": "1"}, {}, False),
    ({"vm.swappiness": "1"}, {}, False),
    ({"net.ipv4.ip_forward": "1"}, {"host_network": True}, False),
    ({"kernel.shmmax": "1"}, {"host_ipc": True}, False),
    ({"kernel.shmmax": "1"}, {"host_network": True}, True),
])
def test_only_namespaced_sysctls_of_the_pods_own_namespaces(sysctls: dict[str, str], kwargs: dict[str, bool],
                                                            allowed: bool) -> None:
    if allowed:
        check_sysctls(config(sysctls=sysctls, **kwargs))
    else:
        with pytest.raises(ValueError):
            check_sysctls(config(sysctls=sysctls, **kwargs))
