"""Service ports to nftables rules (kube-proxy's nftables layout), and the `nft -f` scripts that apply them.

`render` turns the model into a Ruleset (per-service chains, affinity sets, map elements); `Renderer` does the
same but re-renders only the Service ports that changed. `full_script` replaces the whole table in one
transaction, `update_script` moves the kernel from one Ruleset to the next touching only what changed (so
affinity sets and untouched chains survive), `delete_script` removes the table.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubelite.proxy.model import Endpoint, ServicePort

MASQUERADE_MARK = "0x4000"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
CLUSTER_IPS = "cluster-ips"
MARK_CHAIN = "mark-for-masquerade"
REJECT_CHAIN = "reject-chain"
ADDRESS_KEY = "ipv4_addr . inet_proto . inet_service"
PORT_KEY = "inet_proto . inet_service"

_BASE = f"""\
	map {SERVICE_IPS} {{
		type {ADDRESS_KEY} : verdict
	}}
	map {SERVICE_NODEPORTS} {{
		type {PORT_KEY} : verdict
	}}
	map {NO_ENDPOINT_SERVICES} {{
		type {ADDRESS_KEY} : verdict
	}}
	map {NO_ENDPOINT_NODEPORTS} {{
		type {PORT_KEY} : verdict
	}}
	set {CLUSTER_IPS} {{
		type ipv4_addr
	}}
	chain {MARK_CHAIN} {{
		meta mark set meta mark or {MASQUERADE_MARK}
	}}
	chain masquerading {{
		meta mark & {MASQUERADE_MARK} == 0 return
		meta mark set meta mark xor {MASQUERADE_MARK}
		masquerade fully-random
	}}
	chain {REJECT_CHAIN} {{
		meta l4proto tcp reject with tcp reset
		reject
	}}
	chain services {{
		ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}
		fib daddr type local meta l4proto . th dport vmap @{SERVICE_NODEPORTS}
	}}
	chain endpoints-check {{
		ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}
		fib daddr type local meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}
		ip daddr @{CLUSTER_IPS} goto {REJECT_CHAIN}
	}}
	chain nat-prerouting {{
		type nat hook prerouting priority -100; policy accept;
		jump services
	}}
	chain nat-output {{
		type nat hook output priority -100; policy accept;
		jump services
	}}
	chain nat-postrouting {{
		type nat hook postrouting priority 100; policy accept;
		jump masquerading
	}}
	chain filter-input {{
		type filter hook input priority -90; policy accept;
		ct state new jump endpoints-check
	}}
	chain filter-forward {{
		type filter hook forward priority -90; policy accept;
		ct state new jump endpoints-check
	}}
	chain filter-output {{
		type filter hook output priority -90; policy accept;
		ct state new jump endpoints-check
	}}
"""
"""The fixed part of the table. DNAT runs at dstnat (-100) on prerouting and output, before routing; the checks
for Services without usable endpoints and for undefined ClusterIP ports run after it (-90), so they only see
packets that no Service rule rewrote; masquerading of marked packets runs at srcnat (100)."""


@dataclass
class Ruleset:
    """The per-service part of the table: regular chains, affinity sets and the elements of the fixed maps/sets."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    """Affinity set name -> its declaration."""
    elements: dict[tuple[str, str], str] = field(default_factory=dict)
    """(map or set name, key) -> verdict ("" for a set element); the first Service to claim a key keeps it."""


def _name(key: str) -> str:
    """A readable, unique chain-name suffix: a hash of the key (distinguishes near-identical names), then the key."""
    digest = base64.b32encode(hashlib.sha256(key.encode()).digest()[:5]).decode()
    return f"{digest}-{key}"


def _one_of(values: Iterable[str]) -> str:
    """An nft match value: the single value, or an anonymous set of them."""
    items = list(values)
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def usable_endpoints(port: ServicePort) -> tuple[list[Endpoint], list[Endpoint]]:
    """(cluster-wide, local) endpoints traffic may go to: the ready ones, else those serving while terminating."""
    cluster = [e for e in port.endpoints if e.ready] or [e for e in port.endpoints if e.serving and e.terminating]
    local = ([e for e in port.endpoints if e.local and e.ready]
             or [e for e in port.endpoints if e.local and e.serving and e.terminating])
    return cluster, local


class _PortRenderer:
    """Renders one Service port into a Ruleset."""

    def __init__(self, port: ServicePort, cluster_cidr: str, out: Ruleset):
        self.port = port
        self.cluster_cidr = cluster_cidr
        self.out = out
        self.base = _name(port.key)

    def endpoint_chain(self, endpoint: Endpoint) -> str:
        return f"endpoint-{_name(f'{self.port.key}__{endpoint.ip}/{endpoint.port}')}"

    def affinity_set(self, endpoint: Endpoint) -> str:
        # The timeout is part of the name: a changed timeout makes a new set instead of a conflicting redefinition.
        return f"affinity-{self.port.affinity_timeout}-{_name(f'{self.port.key}__{endpoint.ip}/{endpoint.port}')}"

    def element(self, name: str, key: str, value: str = "") -> None:
        self.out.elements.setdefault((name, key), value)

    def render(self) -> None:
        port = self.port
        cluster, local = usable_endpoints(port)
        has_any = bool(cluster)
        uses_cluster = has_any and (not port.internal_local or port.external)
        uses_local = bool(local) and (port.internal_local or (port.external and port.external_local))
        cluster_chain, local_chain = f"service-{self.base}", f"local-{self.base}"
        external_chain = f"external-{self.base}"
        internal_chain = local_chain if port.internal_local else cluster_chain
        has_internal = bool(local) if port.internal_local else has_any
        has_external = bool(local) if port.external_local else has_any
        refuse = "drop" if has_any else f"goto {REJECT_CHAIN}"

        for ip in port.cluster_ips:
            address = f"{ip} . {port.protocol} . {port.port}"
            self.element(CLUSTER_IPS, ip)
            if has_internal:
                self.element(SERVICE_IPS, address, f"goto {internal_chain}")
            else:
                self.element(NO_ENDPOINT_SERVICES, address, refuse)
        for ip in (*port.external_ips, *port.load_balancer_ips):
            address = f"{ip} . {port.protocol} . {port.port}"
            if has_any:
                self.element(SERVICE_IPS, address, f"goto {external_chain}")
            if not has_external:
                self.element(NO_ENDPOINT_SERVICES, address, refuse)
        if port.node_port:
            node_port = f"{port.protocol} . {port.node_port}"
            if has_any:
                self.element(SERVICE_NODEPORTS, node_port, f"goto {external_chain}")
            if not has_external:
                self.element(NO_ENDPOINT_NODEPORTS, node_port, refuse)

        # ClusterIP traffic from outside the cluster (the node itself, say) is masqueraded: the endpoint may
        # answer through another route otherwise.
        masquerade_outsiders = (f"ip daddr {_one_of(port.cluster_ips)} {port.protocol} dport {port.port} "
                                f"ip saddr != {self.cluster_cidr} jump {MARK_CHAIN}",) if port.cluster_ips else ()
        if uses_cluster:
            head = masquerade_outsiders if internal_chain == cluster_chain else ()
            self.out.chains[cluster_chain] = head + self.dispatch(cluster)
        if uses_local:
            head = masquerade_outsiders if internal_chain == local_chain else ()
            self.out.chains[local_chain] = head + self.dispatch(local)
        if port.external and has_any:
            self.out.chains[external_chain] = self.external_rules(cluster_chain, local_chain if local else "")
        used = {e: None for e in (cluster if uses_cluster else []) + (local if uses_local else [])}
        for endpoint in used:
            self.render_endpoint(endpoint)

    def dispatch(self, endpoints: list[Endpoint]) -> tuple[str, ...]:
        """Rules that pick an endpoint: an affinity hit first, else uniformly at random."""
        rules = [f"ip saddr @{self.affinity_set(e)} goto {self.endpoint_chain(e)}"
                 for e in endpoints] if self.port.affinity_timeout else []
        if len(endpoints) == 1:
            rules.append(f"goto {self.endpoint_chain(endpoints[0])}")
        else:
            choices = ", ".join(f"{i} : goto {self.endpoint_chain(e)}" for i, e in enumerate(endpoints))
            rules.append(f"numgen random mod {len(endpoints)} vmap {{ {choices} }}")
        return tuple(rules)

    def external_rules(self, cluster_chain: str, local_chain: str) -> tuple[str, ...]:
        """NodePort, external-IP and load-balancer traffic: masqueraded to any endpoint under policy Cluster; under
        Local, only clients outside this node keep their source and reach local endpoints (or fall through to the
        drop of the endpoints check), while pods and the node itself are served like ClusterIP traffic."""
        if not self.port.external_local:
            return (f"jump {MARK_CHAIN}", f"goto {cluster_chain}")
        rules = (f"ip saddr {self.cluster_cidr} goto {cluster_chain}",
                 f"fib saddr type local jump {MARK_CHAIN}",
                 f"fib saddr type local goto {cluster_chain}")
        return rules + ((f"goto {local_chain}",) if local_chain else ())

    def render_endpoint(self, endpoint: Endpoint) -> None:
        """The endpoint's chain: hairpin traffic is masqueraded, affinity recorded, then DNAT."""
        rules = [f"ip saddr {endpoint.ip} jump {MARK_CHAIN}"]
        if self.port.affinity_timeout:
            name = self.affinity_set(endpoint)
            self.out.sets[name] = f"type ipv4_addr; flags dynamic,timeout; timeout {self.port.affinity_timeout}s;"
            rules.append(f"update @{name} {{ ip saddr }}")
        rules.append(f"meta l4proto {self.port.protocol} dnat to {endpoint.ip}:{endpoint.port}")
        self.out.chains[self.endpoint_chain(endpoint)] = tuple(rules)


def render_port(port: ServicePort, cluster_cidr: str) -> Ruleset:
    """The chains, sets and map elements of one Service port."""
    out = Ruleset()
    _PortRenderer(port, cluster_cidr, out).render()
    return out


def merge(parts: Iterable[Ruleset]) -> Ruleset:
    """One Ruleset of several; a map key claimed by more than one part stays with the first."""
    out = Ruleset()
    for part in parts:
        out.chains.update(part.chains)
        out.sets.update(part.sets)
        for key, value in part.elements.items():
            out.elements.setdefault(key, value)
    return out


def render(ports: Iterable[ServicePort], cluster_cidr: str) -> Ruleset:
    """The Ruleset of these Service ports; traffic from outside cluster_cidr to a ClusterIP is masqueraded."""
    return merge(render_port(port, cluster_cidr) for port in ports)


class Renderer:
    """render() with a memory: a Service port equal to one of the last call reuses its rendering."""

    def __init__(self, cluster_cidr: str):
        self.cluster_cidr = cluster_cidr
        self._parts: dict[ServicePort, Ruleset] = {}

    def render(self, ports: Iterable[ServicePort]) -> Ruleset:
        """The Ruleset of these Service ports, rendering only those that changed."""
        previous, self._parts = self._parts, {}
        for port in ports:
            part = previous.get(port)
            self._parts[port] = part if part is not None else render_port(port, self.cluster_cidr)
        return merge(self._parts.values())


def _element_lines(table: str, verb: str, elements: dict[tuple[str, str], str], with_values: bool) -> list[str]:
    by_name: dict[str, list[str]] = {}
    for (name, key), value in elements.items():
        by_name.setdefault(name, []).append(f"{key} : {value}" if with_values and value else key)
    return [f"{verb} element ip {table} {name} {{ {', '.join(items)} }}" for name, items in sorted(by_name.items())]


def update_script(table: str, old: Ruleset, new: Ruleset) -> str:
    """A script moving the table from `old` to `new` in one transaction ("" when nothing changed): stale elements
    and rules go first, then chains and sets nothing refers to any more, then new sets, chains, rules, elements."""
    gone_elements = {k: v for k, v in old.elements.items() if new.elements.get(k) != v}
    new_elements = {k: v for k, v in new.elements.items() if old.elements.get(k) != v}
    changed = [c for c, rules in old.chains.items() if new.chains.get(c) != rules]
    lines = _element_lines(table, "delete", gone_elements, with_values=False)
    lines += [f"flush chain ip {table} {c}" for c in changed]
    lines += [f"delete chain ip {table} {c}" for c in changed if c not in new.chains]
    lines += [f"delete set ip {table} {s}" for s, spec in old.sets.items() if new.sets.get(s) != spec]
    lines += [f"add set ip {table} {s} {{ {spec} }}" for s, spec in new.sets.items() if old.sets.get(s) != spec]
    lines += [f"add chain ip {table} {c}" for c in new.chains if c not in old.chains]
    lines += [f"add rule ip {table} {c} {rule}" for c, rules in new.chains.items() if old.chains.get(c) != rules
              for rule in rules]
    lines += _element_lines(table, "add", new_elements, with_values=True)
    return "\n".join(lines) + "\n" if lines else ""


def delete_script(table: str) -> str:
    """Remove the table; works whether or not it exists."""
    return f"table ip {table}\ndelete table ip {table}\n"


def full_script(table: str, ruleset: Ruleset) -> str:
    """Replace the whole table (created if absent) with the fixed chains and this Ruleset, atomically."""
    return delete_script(table) + f"table ip {table} {{\n{_BASE}}}\n" + update_script(table, Ruleset(), ruleset)
