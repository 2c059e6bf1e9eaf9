"""The proxy's pure parts: Services and slices to the model, the model to nftables rules and scripts (checked by
the real `nft -c`), stale UDP flows, and the ServiceLB ingress choice."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from kubelite.controllers.servicelb import desired_ingress
from kubelite.proxy.conntrack import FlowTuple, stale_flows
from kubelite.proxy.model import Endpoint, ServicePort, build
from kubelite.proxy.rules import (
    CLUSTER_IPS,
    NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Renderer,
    Ruleset,
    full_script,
    render,
    update_script,
)

Obj = dict[str, Any]
CIDR = "10.42.0.0/16"
TABLE = f"kptest-unit-{os.getpid()}"
A, B, C = Endpoint("10.42.0.2", 8080, local=True), Endpoint("10.42.1.2", 8080), Endpoint("10.42.1.3", 8080)


def port(name: str = "web", **kwargs: Any) -> ServicePort:
    values: dict[str, Any] = {"namespace": "default", "name": name, "port_name": "http", "protocol": "tcp",
                              "port": 80, "cluster_ips": ("10.43.0.10",), "endpoints": (A, B, C)}
    return ServicePort(**{**values, **kwargs})


def chain(ruleset: Ruleset, prefix: str) -> tuple[str, ...]:
    [rules] = [rules for name, rules in ruleset.chains.items() if name.startswith(prefix)]
    return rules


def dnat_targets(ruleset: Ruleset) -> set[str]:
    return {rule.split("dnat to ")[1] for rules in ruleset.chains.values() for rule in rules if "dnat to" in rule}


def nft_check(script: str) -> None:
    """Have the kernel check the script in a transaction that is never committed."""
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.skip("nft -c needs root and nftables")
    done = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + "\n" + script


# --- the model from API objects -------------------------------------------------------------------------------------

def service(name: str, spec: Obj, status: Obj | None = None, labels: dict[str, str] | None = None) -> Obj:
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels or {}}, "spec": spec,
            "status": status or {}}


def endpoint_slice(service_name: str, endpoints: list[Obj], ports: list[Obj], address_type: str = "IPv4") -> Obj:
    return {"metadata": {"name": f"{service_name}-x", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": address_type, "endpoints": endpoints, "ports": ports}


def test_model_takes_ports_endpoints_and_policies_from_services_and_slices() -> None:
    services = [
        service("web", {"type": "LoadBalancer", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                        "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                                  {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}],
                        "externalIPs": ["192.0.2.9", "fd00::1"], "sessionAffinity": "ClientIP",
                        "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local"},
                {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}, {"ip": "192.0.2.3", "ipMode": "Proxy"},
                                              {"hostname": "lb.example"}]}}),
        service("headless", {"clusterIP": "None", "ports": [{"port": 80}]}),
        service("external-name", {"type": "ExternalName", "externalName": "example.com"}),
        service("other-proxy", {"clusterIP": "10.43.0.11", "ports": [{"port": 80}]},
                labels={"service.kubernetes.io/service-proxy-name": "elsewhere"}),
        service("plain", {"clusterIP": "10.43.0.12", "type": "ClusterIP", "sessionAffinity": "ClientIP",
                          "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                          "ports": [{"port": 81, "nodePort": 30081}], "externalTrafficPolicy": "Cluster"},
                {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}),
    ]
    slices = [
        endpoint_slice("web", [
            {"addresses": ["10.42.0.2"], "conditions": {"ready": True}, "nodeName": "node-a"},
            {"addresses": ["10.42.1.2"], "conditions": {"ready": False, "serving": True, "terminating": True},
             "nodeName": "node-b"},
            {"addresses": ["10.42.1.3"], "conditions": {}},
        ], [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
        endpoint_slice("web", [{"addresses": ["10.42.0.2"], "conditions": {"ready": True}, "nodeName": "node-a"}],
                       [{"name": "http", "port": 8080, "protocol": "TCP"}]),
        endpoint_slice("web", [{"addresses": ["fd00::2"]}], [{"name": "http", "port": 8080}], "IPv6"),
        endpoint_slice("plain", [{"addresses": ["10.42.0.9"]}], [{"name": "", "port": 9090}]),
        endpoint_slice("headless", [{"addresses": ["10.42.0.8"]}], [{"name": "", "port": 80}]),
    ]
    ports = build(services, slices, "node-a")
    assert [p.key for p in ports] == ["ns/plain/tcp/", "ns/web/tcp/http", "ns/web/udp/dns"]
    plain, http, dns = ports
    assert plain == ServicePort("ns", "plain", "", "tcp", 81, ("10.43.0.12",), affinity_timeout=60,
                                endpoints=(Endpoint("10.42.0.9", 9090),))
    assert http.node_port == 30080 and dns.node_port == 30053 and dns.protocol == "udp"
    assert http.external_ips == ("192.0.2.9",) and http.load_balancer_ips == ("192.0.2.2",)
    assert http.affinity_timeout == 10800 and http.internal_local and http.external_local
    assert http.endpoints == (Endpoint("10.42.0.2", 8080, local=True),
                              Endpoint("10.42.1.2", 8080, ready=False, serving=True, terminating=True),
                              Endpoint("10.42.1.3", 8080))
    assert [e.port for e in dns.endpoints] == [5353, 5353, 5353]


# --- rendering ------------------------------------------------------------------------------------------------------

def test_cluster_ip_dispatches_through_maps_to_every_ready_endpoint() -> None:
    ruleset = render([port(node_port=30080)], CIDR)
    service_chain = ruleset.elements[(SERVICE_IPS, "10.43.0.10 . tcp . 80")].removeprefix("goto ")
    assert service_chain.startswith("service-") and service_chain.endswith("default/web/tcp/http")
    rules = ruleset.chains[service_chain]
    assert rules[0] == "ip daddr 10.43.0.10 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
    assert rules[1].startswith("numgen random mod 3 vmap { 0 : goto endpoint-")
    assert ruleset.elements[(CLUSTER_IPS, "10.43.0.10")] == ""
    assert ruleset.elements[(SERVICE_NODEPORTS, "tcp . 30080")].startswith("goto external-")
    assert chain(ruleset, "external-") == ("jump mark-for-masquerade", f"goto {service_chain}")
    endpoint = [r for name, r in ruleset.chains.items() if name.endswith("__10.42.1.2/8080")][0]
    assert endpoint == ("ip saddr 10.42.1.2 jump mark-for-masquerade", "meta l4proto tcp dnat to 10.42.1.2:8080")
    assert dnat_targets(ruleset) == {"10.42.0.2:8080", "10.42.1.2:8080", "10.42.1.3:8080"}
    assert not any(key[0] in (NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS) for key in ruleset.elements)
    nft_check(full_script(TABLE, ruleset))


def test_client_ip_affinity_records_and_prefers_the_endpoint_of_a_client() -> None:
    ruleset = render([port(affinity_timeout=60, protocol="udp", endpoints=(A, B))], CIDR)
    assert len(ruleset.sets) == 2
    assert set(ruleset.sets.values()) == {"type ipv4_addr; flags dynamic,timeout; timeout 60s;"}
    rules = chain(ruleset, "service-")
    for endpoint in (A, B):
        [name] = [n for n in ruleset.chains if n.endswith(f"__{endpoint.ip}/8080")]
        [affinity] = [s for s in ruleset.sets if s.endswith(f"__{endpoint.ip}/8080")]
        assert f"ip saddr @{affinity} goto {name}" in rules
        assert ruleset.chains[name] == (f"ip saddr {endpoint.ip} jump mark-for-masquerade",
                                        f"update @{affinity} {{ ip saddr }}",
                                        f"meta l4proto udp dnat to {endpoint.ip}:8080")
    assert rules[-1].startswith("numgen random mod 2 vmap")
    nft_check(full_script(TABLE, ruleset))


def test_only_ready_endpoints_else_serving_terminating_else_reject() -> None:
    not_ready = Endpoint("10.42.1.3", 8080, ready=False, serving=False)
    draining = Endpoint("10.42.1.4", 8080, ready=False, serving=True, terminating=True)
    assert dnat_targets(render([port(endpoints=(A, not_ready, draining))], CIDR)) == {"10.42.0.2:8080"}
    fallback = render([port(endpoints=(not_ready, draining))], CIDR)
    assert dnat_targets(fallback) == {"10.42.1.4:8080"}
    assert chain(fallback, "service-")[-1] == f"goto {[c for c in fallback.chains if c.startswith('endpoint-')][0]}"
    for endpoints in ((), (not_ready,)):
        refused = render([port(endpoints=endpoints, node_port=30080, external_ips=("192.0.2.9",))], CIDR)
        assert refused.chains == {} and refused.sets == {}
        assert refused.elements == {
            (CLUSTER_IPS, "10.43.0.10"): "",
            (NO_ENDPOINT_SERVICES, "10.43.0.10 . tcp . 80"): "goto reject-chain",
            (NO_ENDPOINT_SERVICES, "192.0.2.9 . tcp . 80"): "goto reject-chain",
            (NO_ENDPOINT_NODEPORTS, "tcp . 30080"): "goto reject-chain",
        }
        nft_check(full_script(TABLE, refused))


def test_external_traffic_policy_local_keeps_sources_and_uses_local_endpoints_only() -> None:
    ruleset = render([port(node_port=30080, load_balancer_ips=("192.0.2.2",), external_local=True)], CIDR)
    service_chain, local_chain = (next(n for n in ruleset.chains if n.startswith(p)) for p in ("service-", "local-"))
    assert chain(ruleset, "external-") == (
        f"ip saddr 10.42.0.0/16 goto {service_chain}",
        "fib saddr type local jump mark-for-masquerade",
        f"fib saddr type local goto {service_chain}",
        f"goto {local_chain}",
    ), "pods and the node use every endpoint; outside clients keep their address and reach local endpoints"
    local_endpoint = next(n for n in ruleset.chains if n.endswith("__10.42.0.2/8080"))
    assert ruleset.chains[local_chain] == (f"goto {local_endpoint}",)
    assert ruleset.elements[(SERVICE_IPS, "192.0.2.2 . tcp . 80")] == f"goto external-{service_chain[8:]}"
    nft_check(full_script(TABLE, ruleset))

    remote_only = render([port(node_port=30080, external_local=True, endpoints=(B, C))], CIDR)
    assert not any(name.startswith("local-") for name in remote_only.chains)
    assert chain(remote_only, "external-")[-1].startswith("fib saddr type local goto service-")
    assert remote_only.elements[(NO_ENDPOINT_NODEPORTS, "tcp . 30080")] == "drop"
    assert remote_only.elements[(SERVICE_IPS, "10.43.0.10 . tcp . 80")].startswith("goto service-")
    nft_check(full_script(TABLE, remote_only))


def test_internal_traffic_policy_local() -> None:
    ruleset = render([port(internal_local=True)], CIDR)
    assert set(ruleset.chains) == {n for n in ruleset.chains if n.startswith(("local-", "endpoint-"))}
    assert dnat_targets(ruleset) == {"10.42.0.2:8080"}
    assert ruleset.elements[(SERVICE_IPS, "10.43.0.10 . tcp . 80")].startswith("goto local-")
    assert chain(ruleset, "local-")[0].endswith("ip saddr != 10.42.0.0/16 jump mark-for-masquerade")
    remote_only = render([port(internal_local=True, endpoints=(B,))], CIDR)
    assert remote_only.chains == {}
    assert remote_only.elements[(NO_ENDPOINT_SERVICES, "10.43.0.10 . tcp . 80")] == "drop"


def test_a_key_claimed_twice_goes_to_the_first_service() -> None:
    first = port("a", external_ips=("192.0.2.9",))
    second = port("b", cluster_ips=("10.43.0.11",), external_ips=("192.0.2.9",))
    ruleset = render([first, second], CIDR)
    assert ruleset.elements[(SERVICE_IPS, "192.0.2.9 . tcp . 80")].endswith("default/a/tcp/http")
    nft_check(full_script(TABLE, ruleset))


def test_sctp_and_many_ports_render_valid_nft() -> None:
    ports = [port(f"svc-{i}", cluster_ips=(f"10.43.1.{i}",), protocol=("tcp", "udp", "sctp")[i % 3],
                  node_port=30000 + i, affinity_timeout=30 * (i % 2)) for i in range(1, 40)]
    nft_check(full_script(TABLE, render(ports, CIDR)))


# --- scripts --------------------------------------------------------------------------------------------------------

def test_full_script_replaces_the_table_with_dnat_before_routing_and_checks_after() -> None:
    script = full_script(TABLE, render([port()], CIDR))
    assert script.startswith(f"table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n")
    assert "type nat hook output priority -100; policy accept;" in script
    assert "type nat hook prerouting priority -100; policy accept;" in script
    assert "type filter hook output priority -90; policy accept;" in script
    assert "fib daddr type local meta l4proto . th dport vmap @service-nodeports" in script
    assert "ip daddr 127.0.0.0/8" not in script, "NodePorts answer on loopback too"


def test_update_script_touches_only_what_changed_and_keeps_affinity_sets() -> None:
    other = port("other", cluster_ips=("10.43.0.20",), endpoints=(B,))
    old = render([port(affinity_timeout=60), other], CIDR)
    assert update_script(TABLE, old, render([port(affinity_timeout=60), other], CIDR)) == ""
    new = render([port(affinity_timeout=60, endpoints=(A, B)), other], CIDR)
    script = update_script(TABLE, old, new)
    lines = script.splitlines()
    removed = next(n for n in old.chains if n.endswith("__10.42.1.3/8080"))
    kept = next(n for n in old.chains if n.endswith("__10.42.0.2/8080"))
    assert f"delete chain ip {TABLE} {removed}" in lines
    assert f"flush chain ip {TABLE} {chain_name(old, 'service-')}" in lines
    assert not any(kept in line for line in lines if "flush" in line or "delete" in line)
    assert [line for line in lines if " set " in line] == [
        f"delete set ip {TABLE} {next(s for s in old.sets if s.endswith('__10.42.1.3/8080'))}"]
    assert "other" not in script and "element" not in script
    nft_check(full_script(TABLE, old) + script)

    gone = update_script(TABLE, new, render([other], CIDR))
    assert gone.startswith(f"delete element ip {TABLE} cluster-ips {{ 10.43.0.10 }}\n")
    assert f"delete element ip {TABLE} service-ips {{ 10.43.0.10 . tcp . 80 }}" in gone
    nft_check(full_script(TABLE, new) + gone)
    nft_check(full_script(TABLE, Ruleset()) + update_script(TABLE, Ruleset(), new))


def test_update_script_moves_a_key_between_maps() -> None:
    old = render([port()], CIDR)
    new = render([port(endpoints=())], CIDR)
    script = update_script(TABLE, old, new)
    assert f"delete element ip {TABLE} service-ips {{ 10.43.0.10 . tcp . 80 }}" in script
    assert f"add element ip {TABLE} no-endpoint-services {{ 10.43.0.10 . tcp . 80 : goto reject-chain }}" in script
    nft_check(full_script(TABLE, old) + script)
    nft_check(full_script(TABLE, new) + update_script(TABLE, new, old))


def chain_name(ruleset: Ruleset, prefix: str) -> str:
    return next(n for n in ruleset.chains if n.startswith(prefix))


def test_renderer_renders_like_render_and_reuses_unchanged_ports() -> None:
    renderer = Renderer(CIDR)
    ports = [port("a"), port("b", cluster_ips=("10.43.0.11",))]
    first = renderer.render(ports)
    assert first == render(ports, CIDR)
    changed = [ports[0], port("b", cluster_ips=("10.43.0.11",), endpoints=(A,))]
    second = renderer.render(changed)
    assert second == render(changed, CIDR)
    kept = next(n for n in first.chains if n.startswith("service-") and "/a/" in n)
    assert second.chains[kept] is first.chains[kept], "an unchanged port is not rendered again"


# --- stale UDP flows ------------------------------------------------------------------------------------------------

def flow(daddr: str, dport: int, reply_saddr: str, reply_sport: int) -> tuple[FlowTuple, FlowTuple]:
    return (FlowTuple(saddr="10.42.0.5", daddr=daddr, proto=17, sport=40000, dport=dport),
            FlowTuple(saddr=reply_saddr, daddr="10.42.0.5", proto=17, sport=reply_sport, dport=40000))


def test_stale_udp_flows_are_those_to_endpoints_a_port_no_longer_has() -> None:
    dns = port("dns", protocol="udp", port=53, node_port=30053, endpoints=(A, B))
    assert stale_flows([dns, port()], [dns, port(endpoints=(A,))]) == [], "TCP and unchanged UDP ports are left"
    [stale] = stale_flows([dns], [port("dns", protocol="udp", port=53, node_port=30053, endpoints=(A,))])
    assert stale.matches(*flow("10.43.0.10", 53, "10.42.1.2", 8080)), "a flow to the removed endpoint"
    assert not stale.matches(*flow("10.43.0.10", 53, "10.42.0.2", 8080)), "a flow to a kept endpoint"
    assert stale.matches(*flow("192.0.2.2", 30053, "10.42.1.2", 8080)), "a NodePort flow to the removed endpoint"
    assert not stale.matches(*flow("192.0.2.2", 30053, "192.0.2.2", 30053)), "an un-NATed flow to a local port"
    assert not stale.matches(*flow("10.43.0.11", 53, "10.42.1.2", 8080)), "another service's flow"
    [new] = stale_flows([], [dns])
    assert new.matches(*flow("10.43.0.10", 53, "10.43.0.10", 53)), "a flow from before the Service had endpoints"
    [gone] = stale_flows([dns], [])
    assert gone.matches(*flow("10.43.0.10", 53, "10.42.0.2", 8080))


# --- ServiceLB ------------------------------------------------------------------------------------------------------

def node(name: str, ip: str, ready: bool = True, labels: dict[str, str] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_load_balancer_ingress_is_the_ready_nodes_addresses() -> None:
    nodes = [node("b", "192.0.2.10"), node("a", "192.0.2.9"), node("c", "192.0.2.11", ready=False),
             node("d", "192.0.2.12", labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""})]
    lb = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}}
    assert desired_ingress(lb, nodes) == [{"ip": "192.0.2.9"}, {"ip": "192.0.2.10"}]
    assert desired_ingress({"metadata": {"name": "x"}, "spec": {"type": "NodePort"}}, nodes) == []
    assert desired_ingress({"metadata": {"name": "x"}, "spec": {"type": "LoadBalancer",
                                                               "loadBalancerClass": "other"}}, nodes) == []
