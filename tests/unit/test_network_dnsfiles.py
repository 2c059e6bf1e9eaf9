"""Pod resolv.conf and /etc/hosts against upstream's kubelet behaviour (dns.go, kubelet_pods.go)."""

from __future__ import annotations

from typing import Any

import pytest

from kubelite.kubelet.network.dnsfiles import (
    DNSConfig,
    dns_type,
    hostname_and_domain,
    hosts_file,
    merge_options,
    parse_resolv_conf,
    pod_dns_config,
    resolv_conf,
)

HOST_RESOLV = """# generated
nameserver 192.0.2.53
nameserver 192.0.2.54
search example.com. corp.example.com
options timeout:2 attempts:3
"""
LOCALHOST_LINES = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def pod(name: str = "web", namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_parse_resolv_conf_like_the_kubelet() -> None:
    parsed = parse_resolv_conf(HOST_RESOLV + "search last.example .\n  # comment\nnameserver\n")
    assert parsed.servers == ["192.0.2.53", "192.0.2.54"]
    assert parsed.searches == ["last.example"], "the last search line wins, trailing dots and '.' go"
    assert parsed.options == ["timeout:2", "attempts:3"]
    assert parse_resolv_conf("search a.example. b.example\n").searches == ["a.example", "b.example"]


def test_cluster_first_uses_cluster_dns_and_appends_host_searches() -> None:
    content = resolv_conf(pod(dnsPolicy="ClusterFirst"), HOST_RESOLV)
    assert content == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local example.com corp.example.com\n"
        "nameserver 10.43.0.10\n"
        "options ndots:5\n"
    )


def test_dns_policy_defaults_to_cluster_first_and_honours_cluster_settings() -> None:
    config = pod_dns_config(pod(), DNSConfig(searches=["cluster.local", "x.example"]), ["10.0.0.10", "10.0.0.11"],
                            "k8s.test")
    assert config.servers == ["10.0.0.10", "10.0.0.11"]
    assert config.searches == ["shop.svc.k8s.test", "svc.k8s.test", "k8s.test", "cluster.local", "x.example"]
    assert config.options == ["ndots:5"]
    deduped = pod_dns_config(pod(), DNSConfig(searches=["svc.cluster.local", "y.example"]))
    assert deduped.searches == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "y.example"]


def test_policy_types() -> None:
    assert dns_type(pod(dnsPolicy="ClusterFirst")) == "cluster"
    assert dns_type(pod(dnsPolicy="ClusterFirst", hostNetwork=True)) == "host"
    assert dns_type(pod(dnsPolicy="ClusterFirstWithHostNet", hostNetwork=True)) == "cluster"
    assert dns_type(pod(dnsPolicy="Default")) == "host"
    assert dns_type(pod(dnsPolicy="None")) == "none"
    assert dns_type(pod(dnsPolicy="Bogus")) == "cluster"


def test_default_policy_is_the_hosts_resolv_conf() -> None:
    assert resolv_conf(pod(dnsPolicy="Default"), HOST_RESOLV) == (
        "search example.com corp.example.com\n"
        "nameserver 192.0.2.53\n"
        "nameserver 192.0.2.54\n"
        "options timeout:2 attempts:3\n"
    )
    host_net = resolv_conf(pod(dnsPolicy="ClusterFirst", hostNetwork=True), HOST_RESOLV)
    assert "nameserver 10.43.0.10" not in host_net and "nameserver 192.0.2.53" in host_net
    with_host_net = resolv_conf(pod(dnsPolicy="ClusterFirstWithHostNet", hostNetwork=True), HOST_RESOLV)
    assert with_host_net.splitlines()[1] == "nameserver 10.43.0.10"


def test_host_policy_without_a_node_resolv_conf_uses_loopback() -> None:
    config = pod_dns_config(pod(dnsPolicy="Default"), None, node_ips=["192.0.2.2", "fd00::2"])
    assert config == DNSConfig(["127.0.0.1", "::1"], ["."], [])
    assert pod_dns_config(pod(dnsPolicy="Default"), None).servers == ["127.0.0.1"]


def test_cluster_first_without_cluster_dns_falls_back_to_the_host() -> None:
    config = pod_dns_config(pod(), parse_resolv_conf(HOST_RESOLV), cluster_dns=[])
    assert config.servers == ["192.0.2.53", "192.0.2.54"]
    assert config.searches == ["example.com", "corp.example.com"]


def test_none_policy_takes_only_dns_config() -> None:
    spec = {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["1.2.3.4"], "searches": ["ns1.svc.cluster.local", "my.dns.search.suffix"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}
    assert resolv_conf(pod(**spec), HOST_RESOLV) == (
        "search ns1.svc.cluster.local my.dns.search.suffix\n"
        "nameserver 1.2.3.4\n"
        "options ndots:2 edns0\n"
    )


def test_dns_config_is_merged_into_the_policy_result() -> None:
    spec = {"dnsConfig": {
        "nameservers": ["10.43.0.10", "8.8.8.8", "8.8.4.4", "1.1.1.1"],
        "searches": ["svc.cluster.local", "extra.example"],
        "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}]}}
    config = pod_dns_config(pod(**spec), parse_resolv_conf(HOST_RESOLV))
    assert config.servers == ["10.43.0.10", "8.8.8.8", "8.8.4.4"], "duplicates dropped, then at most three"
    assert config.searches[-1] == "extra.example" and config.searches.count("svc.cluster.local") == 1
    assert config.options == ["ndots:1", "single-request-reopen"]


def test_merge_options_overrides_by_name() -> None:
    assert merge_options(["ndots:5", "rotate"], [{"name": "rotate", "value": "x"}, {"name": "ndots"}]) == [
        "ndots", "rotate:x"]


def test_search_limits() -> None:
    long = "a" * 254
    many = [f"d{i}.example" for i in range(40)]
    config = pod_dns_config(pod(dnsPolicy="None", dnsConfig={"searches": [long, *many]}), None)
    assert long not in config.searches and len(config.searches) == 31
    wide = [f"{'b' * 200}{i}.example" for i in range(20)]
    fitted = pod_dns_config(pod(dnsPolicy="None", dnsConfig={"searches": wide}), None).searches
    assert len(" ".join(fitted)) <= 2048 and fitted == wide[: len(fitted)] and len(fitted) == 9


def test_empty_configuration_copies_the_hosts_file() -> None:
    assert resolv_conf(pod(dnsPolicy="Default"), "# nothing\n") == "# nothing\n"


def test_hosts_file_plain_pod() -> None:
    assert hosts_file(pod(), ["10.42.0.7"]) == (
        "# Kubernetes-managed hosts file.\n" + LOCALHOST_LINES + "10.42.0.7\tweb\n"
    )


def test_hosts_file_with_hostname_subdomain_and_aliases() -> None:
    spec = {"hostname": "db-0", "subdomain": "db", "hostAliases": [
        {"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
        {"ip": "10.1.2.3", "hostnames": ["foo.remote"]}]}
    assert hosts_file(pod(name="db-xyz", **spec), ["10.42.0.8", "fd00:42::8"]) == (
        "# Kubernetes-managed hosts file.\n" + LOCALHOST_LINES
        + "10.42.0.8\tdb-0.db.shop.svc.cluster.local\tdb-0\n"
        + "fd00:42::8\tdb-0.db.shop.svc.cluster.local\tdb-0\n"
        + "\n# Entries added by HostAliases.\n"
        + "127.0.0.1\tfoo.local\tbar.local\n"
        + "10.1.2.3\tfoo.remote\n"
    )


def test_hostname_without_subdomain_has_no_fqdn() -> None:
    assert hostname_and_domain(pod(hostname="alias")) == ("alias", "")
    assert hosts_file(pod(hostname="alias"), ["10.42.0.9"]).endswith("10.42.0.9\talias\n")
    assert hostname_and_domain(pod(subdomain="s"), "k8s.test") == ("web", "s.shop.svc.k8s.test")


def test_long_pod_names_are_cut_to_a_valid_hostname() -> None:
    name = "x" * 62 + "-yz"
    assert hostname_and_domain(pod(name=name))[0] == "x" * 62
    with pytest.raises(ValueError):
        hostname_and_domain(pod(hostname="Not_Valid"))
    with pytest.raises(ValueError):
        hostname_and_domain(pod(subdomain="bad.sub"))


def test_host_network_pod_gets_the_nodes_hosts_file() -> None:
    node_hosts = "127.0.0.1\tlocalhost\n192.0.2.2\tnode1\n"
    content = hosts_file(pod(hostNetwork=True, hostAliases=[{"ip": "10.0.0.1", "hostnames": ["a"]}]), ["192.0.2.2"],
                         node_hosts=node_hosts)
    assert content == ("# Kubernetes-managed hosts file (host network).\n" + node_hosts
                       + "\n# Entries added by HostAliases.\n10.0.0.1\ta\n")
