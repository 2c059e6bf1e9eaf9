"""The pod network's nftables table: outbound and hairpin masquerade, forward accept and hostPort DNAT.

The whole table is replaced atomically (`nft -f -`) whenever the hostPort mappings change or state must be
re-asserted. A pod without hostPorts needs nothing here (as with the portmap CNI plugin: the proxy masquerades
Service hairpin traffic itself), so it costs no nft run. Pods with hostPorts added while nft runs for another wait
for the next run, which takes all of them: a burst of such pods costs a few nft runs, not one each.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubelite.kubelet.runtime import spawn

log = logging.getLogger(__name__)

PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
MULTICAST = "224.0.0.0/4"


class NftError(RuntimeError):
    """nft rejected a script."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """One hostPort mapping: traffic to a node address (or host_ip only) on host_port goes to the pod's port."""

    protocol: str
    host_port: int
    container_port: int
    host_ip: str = ""

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the pod record on disk."""
        return {"protocol": self.protocol, "hostPort": self.host_port, "containerPort": self.container_port,
                "hostIP": self.host_ip}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostPort:
        """The inverse of to_json."""
        return cls(data["protocol"], int(data["hostPort"]), int(data["containerPort"]), data.get("hostIP", ""))


@dataclass(frozen=True, slots=True)
class NatEntry:
    """What the table needs to know about one pod: its IP and its hostPorts."""

    ip: str
    hostports: tuple[HostPort, ...] = ()


def host_ports(port_mappings: Iterable[Any] | None) -> tuple[HostPort, ...]:
    """The hostPort mappings among a sandbox config's port_mappings (objects with protocol, container_port,
    host_port, host_ip); mappings without a host port, or bound to an IPv6 host IP, are not for this table."""
    result = []
    for mapping in port_mappings or ():
        host_port = int(getattr(mapping, "host_port", 0) or 0)
        if host_port <= 0:
            continue
        protocol = PROTOCOLS.get(str(getattr(mapping, "protocol", "TCP") or "TCP").upper())
        if protocol is None:
            raise ValueError(f"unsupported hostPort protocol {mapping.protocol!r}")
        container_port = int(mapping.container_port)
        if not (0 < host_port < 65536 and 0 < container_port < 65536):
            raise ValueError(f"port out of range in mapping {host_port} -> {container_port}")
        host_ip = str(getattr(mapping, "host_ip", "") or "")
        if host_ip:
            address = ipaddress.ip_address(host_ip)
            if address.version != 4:
                continue
            host_ip = "" if address.is_unspecified else str(address)
        result.append(HostPort(protocol, host_port, container_port, host_ip))
    return tuple(result)


def render(table: str, bridge: str, cluster_cidr: str, entries: Mapping[str, NatEntry]) -> str:
    """The nft script that replaces the table with rules for these pods (first pod to claim a hostPort wins)."""
    hairpin = ", ".join(f"{ip} . {ip}" for ip in dict.fromkeys(e.ip for e in entries.values() if e.hostports))
    claimed: dict[tuple[str, str, int], str] = {}
    dnat = []
    for sandbox_id, entry in entries.items():
        for hp in entry.hostports:
            key = (hp.host_ip, hp.protocol, hp.host_port)
            if key in claimed:
                log.warning("hostPort %s/%s of %s is already taken by %s", hp.protocol, hp.host_port, sandbox_id,
                            claimed[key])
                continue
            claimed[key] = sandbox_id
            match = f"ip daddr {hp.host_ip} " if hp.host_ip else ""
            dnat.append(f"\t\t{match}meta l4proto {hp.protocol} th dport {hp.host_port} "
                        f"dnat to {entry.ip}:{hp.container_port}")
    dnat.sort(key=lambda rule: "ip daddr" not in rule)
    lines = [
        f"table ip {table}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "\tset hairpin {",
        "\t\ttype ipv4_addr . ipv4_addr",
        *([f"\t\telements = {{ {hairpin} }}"] if hairpin else []),
        "\t}",
        "\tchain hostports {",
        *dnat,
        "\t}",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority -100; policy accept;",
        "\t\tfib daddr type local jump hostports",
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tfib daddr type local jump hostports",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority 100; policy accept;",
        "\t\tct status dnat ip saddr . ip daddr @hairpin masquerade",
        f'\t\toifname "{bridge}" ip saddr 127.0.0.0/8 masquerade',
        f"\t\tip saddr {cluster_cidr} ip daddr != {{ {cluster_cidr}, {MULTICAST} }} masquerade",
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority 0; policy accept;",
        f'\t\tiifname "{bridge}" accept',
        f'\t\toifname "{bridge}" accept',
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


async def run_nft(script: str) -> None:
    """Apply an nft script in one transaction."""
    done = await spawn.run(["nft", "-f", "-"], stdin=script.encode(), stderr=spawn.PIPE)
    if done.returncode != 0:
        raise NftError(f"nft failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")


class NatTable:
    """The pods' NAT state and the nftables table that mirrors it; all changes go through one lock."""

    def __init__(self, table: str, bridge: str, cluster_cidr: str) -> None:
        self.table = table
        self.bridge = bridge
        self.cluster_cidr = str(ipaddress.ip_network(cluster_cidr, strict=False))
        self.entries: dict[str, NatEntry] = {}
        self._lock = asyncio.Lock()
        self._applied = False
        self._waiting: list[tuple[str, NatEntry, asyncio.Future[None]]] = []

    def render(self) -> str:
        """The full table for the current entries."""
        return render(self.table, self.bridge, self.cluster_cidr, self.entries)

    async def replace(self, entries: Mapping[str, NatEntry] | None = None) -> None:
        """Take these entries (or keep the current ones) and replace the whole table atomically."""
        async with self._lock:
            if entries is not None:
                self.entries = dict(entries)
            await self._replace()

    async def _replace(self) -> None:
        await run_nft(self.render())
        self._applied = True

    async def add(self, sandbox_id: str, entry: NatEntry) -> None:
        """Add or update one pod: a replace if its hostPorts change or the table is not in place yet, else
        nothing. The first caller to get the lock applies every pod waiting by then."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((sandbox_id, entry, done))
        async with self._lock:
            if not done.done():
                batch, self._waiting = self._waiting, []
                try:
                    await self._add(batch)
                except Exception as exc:
                    for *_, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                except BaseException:
                    self._waiting[:0] = batch
                    raise
                else:
                    for *_, waiter in batch:
                        waiter.set_result(None)
        await done

    async def _add(self, batch: list[tuple[str, NatEntry, asyncio.Future[None]]]) -> None:
        """At most one nft run for a batch: a replace if any pod's hostPorts changed or the table is missing."""
        replace = not self._applied
        for sandbox_id, entry, _ in batch:
            old = self.entries.get(sandbox_id)
            self.entries[sandbox_id] = entry
            if old != entry and (entry.hostports or (old is not None and old.hostports)):
                replace = True
        if replace:
            await self._replace()

    async def remove(self, sandbox_id: str) -> None:
        """Forget one pod; the table is replaced only if it had hostPorts (or is not in place)."""
        async with self._lock:
            old = self.entries.pop(sandbox_id, None)
            if self._applied and (old is None or not old.hostports):
                return
            await self._replace()

    async def delete(self) -> None:
        """Remove the table from the kernel (node reset, tests)."""
        async with self._lock:
            await run_nft(f"table ip {self.table}\ndelete table ip {self.table}\n")
            self._applied = False
