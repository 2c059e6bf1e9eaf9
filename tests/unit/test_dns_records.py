"""The cluster DNS index: every record kind, NXDOMAIN versus NODATA as CoreDNS answers, and updates."""

from __future__ import annotations

from typing import Any

import pytest
from dnslib import QTYPE, RCODE

from kubelite.dns.records import ClusterIndex

Obj = dict[str, Any]
ZONE = "cluster.local"


def service(name: str, cluster_ip: str | list[str] = "", ports: list[Obj] | None = None, namespace: str = "default",
            **spec: Any) -> Obj:
    ips = cluster_ip if isinstance(cluster_ip, list) else [cluster_ip]
    body: Obj = {"ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}
    if cluster_ip:
        body |= {"clusterIP": ips[0], "clusterIPs": ips}
    return {"metadata": {"name": name, "namespace": namespace}, "spec": body}


def endpoint_slice(name: str, service_name: str, endpoints: list[Obj], ports: list[Obj] | None = None,
                   namespace: str = "default", address_type: str = "IPv4") -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": address_type, "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def endpoint(ip: str, ready: bool | None = True, hostname: str = "") -> Obj:
    body: Obj = {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready},
                 "targetRef": {"kind": "Pod", "name": f"pod-{ip}"}}
    if hostname:
        body["hostname"] = hostname
    return body


@pytest.fixture
def index() -> ClusterIndex:
    idx = ClusterIndex(ZONE)
    for ns in ("default", "kube-system", "empty"):
        idx.set_namespace(ns)
    idx.set_service(service("web", "10.43.1.1", [{"name": "http", "port": 80, "protocol": "TCP"},
                                                 {"name": "dns", "port": 53, "protocol": "UDP"}]))
    idx.set_slice(endpoint_slice("web-abc", "web", [endpoint("10.42.0.5"), endpoint("10.42.0.6", ready=None),
                                                    endpoint("10.42.0.7", ready=False)]))
    idx.set_service(service("db", "None", [{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    idx.set_slice(endpoint_slice("db-1", "db", [endpoint("10.42.0.10", hostname="db-0"),
                                                endpoint("10.42.0.11", hostname="db-1"),
                                                endpoint("10.42.0.12", ready=False, hostname="db-2")],
                                 [{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    idx.set_service(service("ext", type="ExternalName", externalName="Example.COM.", ports=[]))
    idx.set_service(service("alias", type="ExternalName", externalName="web.default.svc.cluster.local", ports=[]))
    idx.set_service(service("lonely", "None"))
    idx.set_service(service("dual", ["10.43.1.2", "fd00:43::2"]))
    return idx


def records(index: ClusterIndex, name: str, qtype: str) -> tuple[int, list[tuple[str, str, str]]]:
    answer = index.lookup(name, getattr(QTYPE, qtype))
    assert answer is not None, f"{name} not answered"
    return answer.rcode, [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in answer.answer]


def assert_nodata(index: ClusterIndex, name: str, qtype: str) -> None:
    answer = index.lookup(name, getattr(QTYPE, qtype))
    assert answer is not None and answer.rcode == RCODE.NOERROR and answer.answer == []
    assert [QTYPE[rr.rtype] for rr in answer.authority] == ["SOA"]


def assert_nxdomain(index: ClusterIndex, name: str, qtype: str = "A") -> None:
    answer = index.lookup(name, getattr(QTYPE, qtype))
    assert answer is not None and answer.rcode == RCODE.NXDOMAIN and answer.answer == []
    [soa] = answer.authority
    assert str(soa.rname) == "cluster.local." and soa.ttl == 5
    assert str(soa.rdata).split()[:2] == ["ns.dns.cluster.local.", "hostmaster.cluster.local."]


def test_cluster_ip_service_a_record(index: ClusterIndex) -> None:
    assert records(index, "web.default.svc.cluster.local", "A") == (
        RCODE.NOERROR, [("web.default.svc.cluster.local.", "A", "10.43.1.1")])
    answer = index.lookup("web.default.svc.cluster.local", QTYPE.A)
    assert answer is not None and answer.answer[0].ttl == 5 and answer.authority == []


def test_names_are_case_insensitive_and_may_end_in_a_dot(index: ClusterIndex) -> None:
    assert records(index, "WEB.Default.SVC.Cluster.Local.", "A")[1][0][2] == "10.43.1.1"


def test_other_types_of_an_existing_name_are_nodata(index: ClusterIndex) -> None:
    for qtype in ("AAAA", "TXT", "MX", "PTR", "CNAME"):
        assert_nodata(index, "web.default.svc.cluster.local", qtype)


def test_dual_stack_service_answers_aaaa(index: ClusterIndex) -> None:
    assert records(index, "dual.default.svc.cluster.local", "AAAA")[1] == [
        ("dual.default.svc.cluster.local.", "AAAA", "fd00:43::2")]
    assert records(index, "dual.default.svc.cluster.local", "A")[1] == [
        ("dual.default.svc.cluster.local.", "A", "10.43.1.2")]


def test_search_path_expansions(index: ClusterIndex) -> None:
    assert_nxdomain(index, "web.svc.cluster.local")
    assert_nxdomain(index, "web.cluster.local")
    assert_nxdomain(index, "google.com.default.svc.cluster.local")
    assert_nxdomain(index, "web.default.svc.cluster.local.default.svc.cluster.local")
    assert_nxdomain(index, "missing.default.svc.cluster.local")
    assert_nxdomain(index, "web.nowhere.svc.cluster.local")


def test_namespaces_and_zone_structure_are_nodata(index: ClusterIndex) -> None:
    for name in ("default.svc.cluster.local", "empty.svc.cluster.local", "svc.cluster.local", "pod.cluster.local",
                 "cluster.local", "default.pod.cluster.local"):
        assert_nodata(index, name, "A")
    assert_nxdomain(index, "nowhere.svc.cluster.local")
    index.remove_namespace("empty")
    assert_nxdomain(index, "empty.svc.cluster.local")


def test_zone_apex_soa_and_ns(index: ClusterIndex) -> None:
    rcode, answers = records(index, "cluster.local", "SOA")
    assert rcode == RCODE.NOERROR and answers[0][1] == "SOA"
    assert answers[0][2].split()[2:] == [str(index.serial), "7200", "1800", "86400", "5"]
    answer = index.lookup("cluster.local", QTYPE.NS)
    assert answer is not None
    assert [str(rr.rdata) for rr in answer.answer] == ["ns.dns.cluster.local."]
    assert [(str(rr.rname), str(rr.rdata)) for rr in answer.additional] == [("ns.dns.cluster.local.", "10.43.0.10")]
    assert records(index, "ns.dns.cluster.local", "A")[1] == [("ns.dns.cluster.local.", "A", "10.43.0.10")]
    assert records(index, "dns-version.cluster.local", "TXT")[1] == [("dns-version.cluster.local.", "TXT", '"1.1.0"')]


def test_headless_service_answers_ready_endpoints(index: ClusterIndex) -> None:
    rcode, answers = records(index, "db.default.svc.cluster.local", "A")
    assert rcode == RCODE.NOERROR
    assert [a[2] for a in answers] == ["10.42.0.10", "10.42.0.11"]


def test_headless_endpoint_hostnames(index: ClusterIndex) -> None:
    assert records(index, "db-0.db.default.svc.cluster.local", "A")[1] == [
        ("db-0.db.default.svc.cluster.local.", "A", "10.42.0.10")]
    assert_nxdomain(index, "db-2.db.default.svc.cluster.local")
    assert_nodata(index, "db-1.db.default.svc.cluster.local", "AAAA")


def test_endpoints_without_hostname_are_named_by_dashed_ip(index: ClusterIndex) -> None:
    assert records(index, "10-42-0-5.web.default.svc.cluster.local", "A")[1] == [
        ("10-42-0-5.web.default.svc.cluster.local.", "A", "10.42.0.5")]
    assert records(index, "10-42-0-6.web.default.svc.cluster.local", "A")[1][0][2] == "10.42.0.6"
    assert_nxdomain(index, "10-42-0-7.web.default.svc.cluster.local")


def test_headless_service_without_ready_endpoints_is_nxdomain(index: ClusterIndex) -> None:
    assert_nxdomain(index, "lonely.default.svc.cluster.local")


def test_srv_for_named_ports_of_a_cluster_ip_service(index: ClusterIndex) -> None:
    answer = index.lookup("_http._tcp.web.default.svc.cluster.local", QTYPE.SRV)
    assert answer is not None and answer.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in answer.answer] == ["0 100 80 web.default.svc.cluster.local."]
    assert [(str(rr.rname), str(rr.rdata)) for rr in answer.additional] == [
        ("web.default.svc.cluster.local.", "10.43.1.1")]
    assert [str(rr.rdata) for rr in index.lookup("_DNS._UDP.web.default.svc.cluster.local", QTYPE.SRV).answer] == [
        "0 100 53 web.default.svc.cluster.local."]
    assert_nxdomain(index, "_http._udp.web.default.svc.cluster.local", "SRV")
    assert_nxdomain(index, "_nope._tcp.web.default.svc.cluster.local", "SRV")
    every = index.lookup("web.default.svc.cluster.local", QTYPE.SRV)
    assert sorted(str(rr.rdata) for rr in every.answer) == [
        "0 50 53 web.default.svc.cluster.local.", "0 50 80 web.default.svc.cluster.local."]


def test_srv_for_a_headless_service_targets_each_endpoint(index: ClusterIndex) -> None:
    answer = index.lookup("_pg._tcp.db.default.svc.cluster.local", QTYPE.SRV)
    assert answer is not None
    assert [str(rr.rdata) for rr in answer.answer] == ["0 50 5432 db-0.db.default.svc.cluster.local.",
                                                       "0 50 5432 db-1.db.default.svc.cluster.local."]
    assert [(str(rr.rname), str(rr.rdata)) for rr in answer.additional] == [
        ("db-0.db.default.svc.cluster.local.", "10.42.0.10"), ("db-1.db.default.svc.cluster.local.", "10.42.0.11")]


def test_ptr_for_cluster_ips_and_endpoints(index: ClusterIndex) -> None:
    assert records(index, "1.1.43.10.in-addr.arpa", "PTR")[1] == [
        ("1.1.43.10.in-addr.arpa.", "PTR", "web.default.svc.cluster.local.")]
    assert records(index, "10.0.42.10.in-addr.arpa.", "PTR")[1] == [
        ("10.0.42.10.in-addr.arpa.", "PTR", "db-0.db.default.svc.cluster.local.")]
    assert records(index, "5.0.42.10.in-addr.arpa", "PTR")[1][0][2] == "10-42-0-5.web.default.svc.cluster.local."
    v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa"
    assert records(index, v6, "PTR")[1][0][2] == "dual.default.svc.cluster.local."
    answer = index.lookup("1.1.43.10.in-addr.arpa", QTYPE.A)
    assert answer is not None and answer.answer == [] and str(answer.authority[0].rname) == "in-addr.arpa."
    assert index.lookup("12.0.42.10.in-addr.arpa", QTYPE.PTR) is None
    assert index.lookup("8.8.8.8.in-addr.arpa", QTYPE.PTR) is None


def test_pod_records_in_insecure_mode(index: ClusterIndex) -> None:
    assert records(index, "10-42-0-99.default.pod.cluster.local", "A")[1] == [
        ("10-42-0-99.default.pod.cluster.local.", "A", "10.42.0.99")]
    assert_nodata(index, "10-42-0-99.default.pod.cluster.local", "AAAA")
    assert records(index, "fd00--1.default.pod.cluster.local", "AAAA")[1][0][2] == "fd00::1"
    assert_nxdomain(index, "10-42-0-99.nowhere.pod.cluster.local")
    assert_nxdomain(index, "not-an-ip.default.pod.cluster.local")
    assert_nxdomain(index, "10-42-0-999.default.pod.cluster.local")
    assert_nxdomain(index, "x.10-42-0-99.default.pod.cluster.local")


def test_external_name_is_a_cname_to_chase(index: ClusterIndex) -> None:
    answer = index.lookup("ext.default.svc.cluster.local", QTYPE.A)
    assert answer is not None and answer.chase == "example.com"
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in answer.answer] == [("CNAME", "example.com.")]
    cname = index.lookup("ext.default.svc.cluster.local", QTYPE.CNAME)
    assert cname is not None and cname.chase == "" and len(cname.answer) == 1
    assert_nodata(index, "ext.default.svc.cluster.local", "SRV")


def test_external_name_inside_the_zone_is_resolved_here(index: ClusterIndex) -> None:
    rcode, answers = records(index, "alias.default.svc.cluster.local", "A")
    assert rcode == RCODE.NOERROR
    assert answers == [("alias.default.svc.cluster.local.", "CNAME", "web.default.svc.cluster.local."),
                       ("web.default.svc.cluster.local.", "A", "10.43.1.1")]
    answer = index.lookup("alias.default.svc.cluster.local", QTYPE.A)
    assert answer is not None and not answer.cacheable, "it changes with another Service"
    assert index.lookup("web.default.svc.cluster.local", QTYPE.A).cacheable
    index.set_service(service("loop", type="ExternalName", externalName="loop.default.svc.cluster.local", ports=[]))
    assert records(index, "loop.default.svc.cluster.local", "A")[0] == RCODE.SERVFAIL


def test_names_outside_the_zone_are_not_answered(index: ClusterIndex) -> None:
    assert index.lookup("example.com", QTYPE.A) is None
    assert index.lookup("cluster.localhost", QTYPE.A) is None


def test_updates_replace_records_and_report_changed_names(index: ClusterIndex) -> None:
    changed: list[set[str] | None] = []
    index.on_change = changed.append
    index.set_service(service("web", "10.43.1.9", [{"name": "http", "port": 80, "protocol": "TCP"}]))
    assert records(index, "web.default.svc.cluster.local", "A")[1][0][2] == "10.43.1.9"
    assert index.lookup("1.1.43.10.in-addr.arpa", QTYPE.PTR) is None
    assert records(index, "9.1.43.10.in-addr.arpa", "PTR")[1][0][2] == "web.default.svc.cluster.local."
    assert_nxdomain(index, "_dns._udp.web.default.svc.cluster.local", "SRV")
    assert changed and changed[-1] is not None
    assert {"web.default.svc.cluster.local", "_dns._udp.web.default.svc.cluster.local", "1.1.43.10.in-addr.arpa",
            "9.1.43.10.in-addr.arpa"} <= changed[-1]
    index.remove_slice(endpoint_slice("db-1", "db", []))
    assert_nxdomain(index, "db.default.svc.cluster.local")
    assert_nxdomain(index, "db-0.db.default.svc.cluster.local")
    assert index.lookup("10.0.42.10.in-addr.arpa", QTYPE.PTR) is None
    index.remove_service(service("web"))
    assert_nxdomain(index, "web.default.svc.cluster.local")
    assert_nxdomain(index, "10-42-0-5.web.default.svc.cluster.local")
    assert index.lookup("9.1.43.10.in-addr.arpa", QTYPE.PTR) is None


def test_slices_arriving_before_their_service_and_endpoints_in_several_slices(index: ClusterIndex) -> None:
    index.set_slice(endpoint_slice("late-a", "late", [endpoint("10.42.1.1")], []))
    index.set_slice(endpoint_slice("late-b", "late", [endpoint("10.42.1.2"), endpoint("10.42.1.1")], []))
    assert_nxdomain(index, "late.default.svc.cluster.local")
    index.set_service(service("late", "None", ports=[]))
    assert [a[2] for a in records(index, "late.default.svc.cluster.local", "A")[1]] == ["10.42.1.1", "10.42.1.2"]
    assert_nodata(index, "late.default.svc.cluster.local", "SRV")
    index.set_slice(endpoint_slice("late-a", "late", [endpoint("10.42.1.1", ready=False)], []))
    index.set_slice(endpoint_slice("late-b", "late", [endpoint("10.42.1.2")], []))
    assert [a[2] for a in records(index, "late.default.svc.cluster.local", "A")[1]] == ["10.42.1.2"]


def test_other_zone_names(index: ClusterIndex) -> None:
    other = ClusterIndex("Kube.Example.")
    other.set_service(service("web", "10.43.1.1"))
    assert records(other, "web.default.svc.kube.example", "A")[1][0][2] == "10.43.1.1"
    assert other.lookup("web.default.svc.cluster.local", QTYPE.A) is None
