"""A pod's /etc/resolv.conf and /etc/hosts, as upstream's kubelet (dns.go, kubelet_pods.go) and CRI runtime make them.

Pure functions over the pod as the API returns it (a dict) and the node's own files' contents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import ip_address
from typing import Any

from kubelite.kubelet.runtime.base import DNSConfig

DEFAULT_CLUSTER_DNS = ("10.43.0.10",)
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_OPTIONS = ("ndots:5",)
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_CHARS = 2048
MAX_DOMAIN_LENGTH = 253
MAX_HOSTNAME_LENGTH = 63
MANAGED_HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
MANAGED_HOSTS_HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network).\n"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def parse_resolv_conf(text: str) -> DNSConfig:
    """Parse a resolv.conf as the kubelet does: nameservers accumulate, the last search and options lines win,
    search domains lose a trailing dot (a lone "." is dropped)."""
    config = DNSConfig()
    for line in text.splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            config.servers.append(fields[1])
        elif fields[0] == "search":
            config.searches = [s.removesuffix(".") for s in fields[1:] if s != "."]
        elif fields[0] == "options":
            config.options = fields[1:]
    return config


def dns_type(pod: Mapping[str, Any]) -> str:
    """Which base a pod's DNS starts from: "cluster", "host" or "none" (upstream's getPodDNSType)."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        return "host"
    if policy == "Default":
        return "host"
    return "cluster"


def merge_options(existing: Iterable[str], extra: Iterable[Mapping[str, Any]]) -> list[str]:
    """Merge dnsConfig.options into resolver options: a name given again takes the new value (first position kept)."""
    merged: dict[str, str] = {}
    for option in existing:
        name, _, value = option.partition(":")
        merged[name] = value
    for option in extra:
        merged[str(option.get("name", ""))] = str(option.get("value") or "")
    return [f"{name}:{value}" if value else name for name, value in merged.items()]


def _fit_searches(searches: list[str]) -> list[str]:
    searches = [s for s in searches[:MAX_SEARCH_PATHS] if len(s) <= MAX_DOMAIN_LENGTH]
    while searches and len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches.pop()
    return searches


def pod_dns_config(
    pod: Mapping[str, Any],
    host: DNSConfig | None,
    cluster_dns: Sequence[str] = DEFAULT_CLUSTER_DNS,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    node_ips: Sequence[str] = (),
) -> DNSConfig:
    """The pod's DNS settings (upstream's GetPodDNS). host is the node's parsed resolv.conf, None when the kubelet
    has none (--resolv-conf=""): host-based pods then get the node's loopback and a "." search."""
    base = DNSConfig(list(host.servers), list(host.searches), list(host.options)) if host else DNSConfig()
    kind = dns_type(pod)
    if kind == "none":
        base = DNSConfig()
    elif kind == "cluster" and cluster_dns:
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        cluster_search = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        base.servers = list(cluster_dns)
        base.searches = _unique([*cluster_search, *base.searches]) if cluster_domain else base.searches
        base.options = list(DEFAULT_OPTIONS)
    elif host is None:
        base.servers = _unique("::1" if ip_address(ip).version == 6 else "127.0.0.1" for ip in node_ips)
        base.servers = base.servers or ["127.0.0.1"]
        base.searches = ["."]
    extra = (pod.get("spec") or {}).get("dnsConfig")
    if extra is not None:
        base.servers = _unique([*base.servers, *(extra.get("nameservers") or ())])
        base.searches = _unique([*base.searches, *(extra.get("searches") or ())])
        base.options = merge_options(base.options, extra.get("options") or ())
    base.servers = base.servers[:MAX_NAMESERVERS]
    base.searches = _fit_searches(base.searches)
    return base


def render_resolv_conf(config: DNSConfig) -> str:
    """The file a CRI runtime writes for a DNSConfig: search, nameserver and options lines, in that order."""
    lines = []
    if config.searches:
        lines.append("search " + " ".join(config.searches))
    lines.extend(f"nameserver {server}" for server in config.servers)
    if config.options:
        lines.append("options " + " ".join(config.options))
    return "".join(f"{line}\n" for line in lines)


def resolv_conf(
    pod: Mapping[str, Any],
    host_resolv_conf: str | None,
    cluster_dns: Sequence[str] = DEFAULT_CLUSTER_DNS,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    node_ips: Sequence[str] = (),
) -> str:
    """The pod's /etc/resolv.conf content; an empty configuration means the node's file as it is."""
    host = parse_resolv_conf(host_resolv_conf) if host_resolv_conf is not None else None
    content = render_resolv_conf(pod_dns_config(pod, host, cluster_dns, cluster_domain, node_ips))
    return content or (host_resolv_conf or "")


def hostname_and_domain(pod: Mapping[str, Any], cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> tuple[str, str]:
    """The pod's hostname (spec.hostname or its name, cut to 63 characters) and its domain
    `<subdomain>.<namespace>.svc.<cluster domain>` when spec.subdomain is set, else ""."""
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    hostname = metadata.get("name", "")
    if spec.get("hostname"):
        if not _DNS1123_LABEL.match(spec["hostname"]) or len(spec["hostname"]) > MAX_HOSTNAME_LENGTH:
            raise ValueError(f"pod hostname {spec['hostname']!r} is not a valid DNS-1123 label")
        hostname = spec["hostname"]
    if len(hostname) > MAX_HOSTNAME_LENGTH:
        hostname = hostname[:MAX_HOSTNAME_LENGTH].rstrip("-.")
    domain = ""
    if spec.get("subdomain"):
        if not _DNS1123_LABEL.match(spec["subdomain"]) or len(spec["subdomain"]) > MAX_HOSTNAME_LENGTH:
            raise ValueError(f"pod subdomain {spec['subdomain']!r} is not a valid DNS-1123 label")
        domain = f"{spec['subdomain']}.{metadata.get('namespace') or 'default'}.svc.{cluster_domain}"
    return hostname, domain


def _host_aliases(aliases: Iterable[Mapping[str, Any]]) -> str:
    lines = [f"{alias.get('ip', '')}\t" + "\t".join(alias.get("hostnames") or ()) for alias in aliases]
    return "\n# Entries added by HostAliases.\n" + "".join(f"{line}\n" for line in lines) if lines else ""


def hosts_file(
    pod: Mapping[str, Any],
    pod_ips: Sequence[str],
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    node_hosts: str = "",
) -> str:
    """The pod's /etc/hosts: localhost lines, each pod IP with the FQDN (when it has a subdomain) and hostname,
    then hostAliases; a hostNetwork pod gets the node's hosts file (node_hosts) plus its hostAliases."""
    spec = pod.get("spec") or {}
    aliases = _host_aliases(spec.get("hostAliases") or ())
    if spec.get("hostNetwork"):
        return MANAGED_HOSTS_HEADER_HOST_NETWORK + node_hosts + aliases
    hostname, domain = hostname_and_domain(pod, cluster_domain)
    names = f"{hostname}.{domain}\t{hostname}" if domain else hostname
    return (
        MANAGED_HOSTS_HEADER
        + "127.0.0.1\tlocalhost\n"
        + "::1\tlocalhost ip6-localhost ip6-loopback\n"
        + "fe00::0\tip6-localnet\n"
        + "fe00::0\tip6-mcastprefix\n"
        + "fe00::1\tip6-allnodes\n"
        + "fe00::2\tip6-allrouters\n"
        + "".join(f"{ip}\t{names}\n" for ip in pod_ips)
        + aliases
    )
