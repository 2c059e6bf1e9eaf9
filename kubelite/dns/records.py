"""Cluster DNS records: Services, EndpointSlices and Namespaces indexed by name, answered as CoreDNS's
kubernetes plugin answers them (`pods insecure`, reverse zones with fallthrough)."""

from __future__ import annotations

import ipaddress
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A

Obj = dict[str, Any]
SERVICE_NAME = "kubernetes.io/service-name"
TTL = 5
"""CoreDNS's default TTL for every record of the kubernetes plugin (and the SOA's negative-caching TTL)."""
DNS_VERSION = "1.1.0"
"""The version of the Kubernetes DNS-Based Service Discovery specification, served at dns-version.<zone> TXT."""
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
MAX_CHASE = 8
_POD_LABEL = re.compile(r"^[0-9a-f-]+$")
Port = tuple[str, str, int]
"""(name, protocol, number), name and protocol lower case; number -1 when a slice lists no ports."""


@dataclass(frozen=True, slots=True)
class Target:
    """An address behind a name, with the port and the host name an SRV record for it points at."""

    ip: str
    port: int
    host: str


@dataclass(slots=True)
class Answer:
    """The sections of an authoritative answer; `chase` is a CNAME target outside the zone still to resolve;
    `cacheable` is False when the answer depends on other names than its own (a CNAME followed here)."""

    rcode: int
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    chase: str = ""
    cacheable: bool = True


@dataclass(frozen=True, slots=True)
class _Service:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    headless: bool
    external_name: str
    ports: tuple[Port, ...]


@dataclass(frozen=True, slots=True)
class _Slice:
    service_key: str
    ports: tuple[Port, ...]
    endpoints: tuple[tuple[str, str], ...]
    """(ip, hostname) of every ready address."""


@dataclass(slots=True)
class _Name:
    targets: list[Target] = field(default_factory=list)
    cname: str = ""


def normalize(name: str) -> str:
    """A query name as the index keys it: lower case, without the trailing dot."""
    return name.lower().rstrip(".")


def _ip(value: Any) -> str:
    """The canonical text of an IP address, or "" when it is not one."""
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        return ""


def _dashed(ip: str) -> str:
    """The name CoreDNS gives an endpoint without a hostname: its IP with dashes for dots or colons."""
    return ip.replace(".", "-").replace(":", "-")


def _ports(ports: Iterable[Obj] | None) -> tuple[Port, ...]:
    return tuple(((p.get("name") or "").lower(), (p.get("protocol") or "TCP").lower(),
                  int(p["port"]) if p.get("port") is not None else -1) for p in ports or ())


def _parse_service(obj: Obj) -> _Service:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    headless = spec.get("clusterIP") == "None"
    external = ""
    if spec.get("type") == "ExternalName":
        external = normalize(spec.get("externalName") or "")
        ips: tuple[str, ...] = ()
    else:
        ips = tuple(ip for ip in (_ip(i) for i in spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip)
    return _Service(meta["namespace"], meta["name"], ips, headless, external, _ports(spec.get("ports")))


def _parse_slice(obj: Obj) -> _Slice | None:
    meta = obj["metadata"]
    service = (meta.get("labels") or {}).get(SERVICE_NAME)
    if not service or obj.get("addressType") == "FQDN":
        return None
    endpoints = []
    for endpoint in obj.get("endpoints") or []:
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        hostname = (endpoint.get("hostname") or "").lower()
        endpoints += [(ip, hostname) for ip in (_ip(a) for a in endpoint.get("addresses") or []) if ip]
    return _Slice(f"{meta['namespace']}/{service}", _ports(obj.get("ports")) or (("", "", -1),), tuple(endpoints))


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


class ClusterIndex:
    """Every name of the cluster zone and the reverse zones, kept up to date one Service at a time."""

    def __init__(self, zone: str = "cluster.local", dns_ip: str = "10.43.0.10", ttl: int = TTL):
        self.zone = normalize(zone)
        self.dns_ip = dns_ip
        self.ttl = ttl
        self.serial = int(time.time())
        self.on_change: Callable[[set[str] | None], None] | None = None
        """Told the names whose answers may have changed (None: any name) after every update."""
        self._suffix = "." + self.zone
        self._services: dict[str, _Service] = {}
        self._slices: dict[str, _Slice] = {}
        self._slices_of: dict[str, set[str]] = {}
        self._namespaces: set[str] = set()
        self._services_in: Counter[str] = Counter()
        self._names: dict[str, _Name] = {}
        self._owned: dict[str, list[str]] = {}
        self._service_ptr: dict[str, tuple[str, str]] = {}
        """Reverse name of a ClusterIP -> (Service key, Service name)."""
        self._endpoint_ptr: dict[str, dict[str, list[str]]] = {}
        """Reverse name of an endpoint IP -> Service key -> endpoint names."""
        self._owned_ptr: dict[str, list[str]] = {}

    # updates

    def set_namespace(self, name: str) -> None:
        """A Namespace exists (its name answers NODATA rather than NXDOMAIN)."""
        if name not in self._namespaces:
            self._namespaces.add(name)
            self._notify(None)

    def remove_namespace(self, name: str) -> None:
        """A Namespace is gone."""
        if name in self._namespaces:
            self._namespaces.discard(name)
            self._notify(None)

    def set_service(self, obj: Obj) -> None:
        """Add or replace a Service."""
        service = _parse_service(obj)
        key = f"{service.namespace}/{service.name}"
        if self._services.get(key) == service:
            return
        old = self._services.get(key)
        self._services[key] = service
        if old is None:
            self._services_in[service.namespace] += 1
            if self._services_in[service.namespace] == 1 and service.namespace not in self._namespaces:
                self._notify(None)
        self._rebuild(key)

    def remove_service(self, obj: Obj) -> None:
        """Forget a Service (its slices stay until they are deleted too)."""
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if self._services.pop(key, None) is None:
            return
        self._services_in[meta["namespace"]] -= 1
        if self._services_in[meta["namespace"]] <= 0:
            del self._services_in[meta["namespace"]]
            if meta["namespace"] not in self._namespaces:
                self._notify(None)
        self._rebuild(key)

    def set_slice(self, obj: Obj) -> None:
        """Add or replace an EndpointSlice; only ready endpoints are published."""
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        parsed = _parse_slice(obj)
        old = self._slices.get(key)
        if parsed == old:
            return
        if old is not None:
            self._forget_slice(key, old)
        if parsed is not None:
            self._slices[key] = parsed
            self._slices_of.setdefault(parsed.service_key, set()).add(key)
            self._rebuild(parsed.service_key)
        if old is not None and (parsed is None or parsed.service_key != old.service_key):
            self._rebuild(old.service_key)

    def remove_slice(self, obj: Obj) -> None:
        """Forget an EndpointSlice."""
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        old = self._slices.get(key)
        if old is not None:
            self._forget_slice(key, old)
            self._rebuild(old.service_key)

    def _forget_slice(self, key: str, old: _Slice) -> None:
        del self._slices[key]
        keys = self._slices_of.get(old.service_key)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._slices_of[old.service_key]

    def _notify(self, names: set[str] | None) -> None:
        if self.on_change is not None:
            self.on_change(names)

    def _rebuild(self, key: str) -> None:
        """Replace every name and reverse name one Service contributes, and say which changed."""
        touched = self._remove(key)
        service = self._services.get(key)
        if service is not None:
            touched |= self._add(key, service)
        self._notify(touched)

    def _remove(self, key: str) -> set[str]:
        names = self._owned.pop(key, [])
        for name in names:
            del self._names[name]
        reverses = self._owned_ptr.pop(key, [])
        for reverse in reverses:
            if self._service_ptr.get(reverse, ("",))[0] == key:
                del self._service_ptr[reverse]
            hosts = self._endpoint_ptr.get(reverse)
            if hosts is not None:
                hosts.pop(key, None)
                if not hosts:
                    del self._endpoint_ptr[reverse]
        return {*names, *reverses}

    def _add(self, key: str, service: _Service) -> set[str]:
        """Index the forward names of a Service (each owned by it alone) and its share of reverse names."""
        base = f"{service.name}.{service.namespace}.svc{self._suffix}"
        names: dict[str, _Name] = {}
        reverses: list[str] = []
        if service.external_name:
            if not _ip(service.external_name):
                names[base] = _Name(cname=service.external_name)
        else:
            for ip in service.cluster_ips:
                reverse = ipaddress.ip_address(ip).reverse_pointer
                self._service_ptr[reverse] = (key, base)
                reverses.append(reverse)
            endpoint_targets: list[tuple[Port, Target]] = []
            for slice_key in sorted(self._slices_of.get(key, ())):
                item = self._slices[slice_key]
                for ip, hostname in item.endpoints:
                    host = f"{hostname or _dashed(ip)}.{base}"
                    entry = names.setdefault(host, _Name())
                    for port in item.ports:
                        target = Target(ip, port[2], host)
                        entry.targets.append(target)
                        endpoint_targets.append((port, target))
                    reverse = ipaddress.ip_address(ip).reverse_pointer
                    self._endpoint_ptr.setdefault(reverse, {}).setdefault(key, []).append(host)
                    reverses.append(reverse)
            if service.headless:
                by_port = endpoint_targets
            else:
                by_port = [(port, Target(ip, port[2], base)) for port in service.ports for ip in service.cluster_ips]
            if by_port:
                names[base] = _Name([target for _, target in by_port])
            for (port_name, protocol, _), target in by_port:
                if port_name:
                    names.setdefault(f"_{port_name}._{protocol}.{base}", _Name()).targets.append(target)
        self._names.update(names)
        self._owned[key] = list(names)
        self._owned_ptr[key] = _unique(reverses)
        return {*names, *reverses}

    # lookups

    def namespace_exists(self, namespace: str) -> bool:
        """A Namespace object exists, or a Service in it does (before the namespace informer catches up)."""
        return namespace in self._namespaces or namespace in self._services_in

    def authoritative(self, name: str) -> bool:
        """The normalized name is in the cluster zone (reverse zones are answered only for known addresses)."""
        return name == self.zone or name.endswith(self._suffix)

    def lookup(self, name: str, qtype: int, depth: int = 0) -> Answer | None:
        """The answer for a name and type; None when the name is not ours to answer (forward it upstream)."""
        name = normalize(name)
        if self.authoritative(name):
            return self._lookup_zone(name, qtype, depth)
        zone = next((z for z in REVERSE_ZONES if name.endswith("." + z)), None)
        if zone is None:
            return None
        hosts = [self._service_ptr[name][1]] if name in self._service_ptr else \
            _unique(h for hosts in self._endpoint_ptr.get(name, {}).values() for h in hosts)
        if not hosts:
            return None
        if qtype != QTYPE.PTR:
            return self._negative(RCODE.NOERROR, zone)
        return Answer(RCODE.NOERROR, [RR(name, QTYPE.PTR, ttl=self.ttl, rdata=PTR(host + ".")) for host in hosts])

    def soa(self, zone: str | None = None) -> RR:
        """The SOA record of the cluster zone (or of a reverse zone), as CoreDNS makes it."""
        return RR(zone or self.zone, QTYPE.SOA, ttl=self.ttl, rdata=SOA(
            f"ns.dns.{self.zone}", f"hostmaster.{self.zone}", (self.serial, 7200, 1800, 86400, self.ttl)))

    def _negative(self, rcode: int, zone: str | None = None) -> Answer:
        return Answer(rcode, authority=[self.soa(zone)])

    def _lookup_zone(self, name: str, qtype: int, depth: int) -> Answer:
        base = name[:-len(self._suffix)] if name != self.zone else ""
        if base == "":
            return self._apex(name, qtype)
        if base == "dns-version":
            if qtype != QTYPE.TXT:
                return self._negative(RCODE.NOERROR)
            return Answer(RCODE.NOERROR, [RR(name, QTYPE.TXT, ttl=28800, rdata=TXT(DNS_VERSION))])
        if base == "ns.dns":
            return self._addresses(name, qtype, [Target(self.dns_ip, -1, name)])
        labels = base.split(".")
        kind = labels[-1]
        if kind not in ("svc", "pod") or len(labels) > 5:
            return self._negative(RCODE.NXDOMAIN)
        if len(labels) == 1:
            return self._negative(RCODE.NOERROR)
        if not self.namespace_exists(labels[-2]):
            return self._negative(RCODE.NXDOMAIN)
        if len(labels) == 2:
            return self._negative(RCODE.NOERROR)
        if kind == "pod":
            ip = _pod_ip(labels[0]) if len(labels) == 3 else ""
            if not ip:
                return self._negative(RCODE.NXDOMAIN)
            return self._addresses(name, qtype, [Target(ip, -1, name)])
        entry = self._names.get(name)
        if entry is None:
            return self._negative(RCODE.NXDOMAIN)
        if entry.cname:
            return self._cname(name, entry.cname, qtype, depth)
        return self._addresses(name, qtype, entry.targets)

    def _apex(self, name: str, qtype: int) -> Answer:
        if qtype == QTYPE.SOA:
            return Answer(RCODE.NOERROR, [self.soa()])
        if qtype == QTYPE.NS:
            host = f"ns.dns.{self.zone}"
            return Answer(RCODE.NOERROR, [RR(name, QTYPE.NS, ttl=self.ttl, rdata=NS(host + "."))],
                          additional=self._address_records(host, [self.dns_ip]))
        return self._negative(RCODE.NOERROR)

    def _cname(self, name: str, target: str, qtype: int, depth: int) -> Answer:
        """An ExternalName: the CNAME, then the target's records (from the index, or upstream via `chase`)."""
        if qtype == QTYPE.SRV:
            return self._negative(RCODE.NOERROR)
        record = RR(name, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target + "."))
        if qtype == QTYPE.CNAME:
            return Answer(RCODE.NOERROR, [record])
        if not self.authoritative(target):
            return Answer(RCODE.NOERROR, [record], chase=target)
        if depth >= MAX_CHASE:
            return Answer(RCODE.SERVFAIL, [record], cacheable=False)
        inner = self._lookup_zone(target, qtype, depth + 1)
        inner.answer.insert(0, record)
        inner.cacheable = False
        return inner

    def _addresses(self, name: str, qtype: int, targets: list[Target]) -> Answer:
        """A, AAAA or SRV records of a name's targets; NODATA for other types or when none fits."""
        if qtype == QTYPE.SRV:
            return self._srv(name, targets)
        if qtype not in (QTYPE.A, QTYPE.AAAA):
            return self._negative(RCODE.NOERROR)
        want_v6 = qtype == QTYPE.AAAA
        ips = _unique(t.ip for t in targets if (":" in t.ip) == want_v6)
        if not ips:
            return self._negative(RCODE.NOERROR)
        return Answer(RCODE.NOERROR, self._address_records(name, ips))

    def _address_records(self, name: str, ips: Iterable[str]) -> list[RR]:
        return [RR(name, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(ip)) if ":" in ip
                else RR(name, QTYPE.A, ttl=self.ttl, rdata=A(ip)) for ip in ips]

    def _srv(self, name: str, targets: list[Target]) -> Answer:
        """One SRV per distinct (port, host), weights shared out of 100, the hosts' addresses as extras."""
        pairs = _unique((t.port, t.host) for t in targets if t.port >= 0)
        if not pairs:
            return self._negative(RCODE.NOERROR)
        weight = 100 // len(pairs)
        answer = [RR(name, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, weight, port, host + ".")) for port, host in pairs]
        additional: list[RR] = []
        for host in _unique(host for _, host in pairs):
            additional += self._address_records(host, _unique(t.ip for t in targets if t.host == host))
        return Answer(RCODE.NOERROR, answer, additional=additional)


def _pod_ip(label: str) -> str:
    """The address a `pods insecure` name spells: 10-0-0-1 for IPv4, dashes for colons for IPv6."""
    if not _POD_LABEL.match(label):
        return ""
    if label.count("-") == 3 and "--" not in label:
        return _ip(label.replace("-", "."))
    return _ip(label.replace("-", ":"))
