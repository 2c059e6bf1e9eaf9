"""Host-local IPAM: pod IPs from the node's podCIDR, one reservation file per IP naming its sandbox.

Like the host-local CNI plugin, reservations live in files so that an agent restart keeps them, and
allocation goes round-robin after the last reserved address so a freed IP is not handed out again at once.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

LAST_RESERVED = "last_reserved_ip"
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


class IPAMExhaustedError(RuntimeError):
    """Every usable address of the subnet is reserved."""


def check_sandbox_id(sandbox_id: str) -> str:
    """Return sandbox_id if it is safe as a file name and a reservation's content, else raise ValueError."""
    if not _SANDBOX_ID.match(sandbox_id):
        raise ValueError(f"invalid sandbox id {sandbox_id!r}")
    return sandbox_id


def parse_subnet(cidr: str) -> IPv4Network:
    """An IPv4 subnet with room for a gateway and at least one pod (prefix /30 or shorter)."""
    subnet = ipaddress.ip_network(cidr.strip(), strict=False)
    if not isinstance(subnet, IPv4Network):
        raise ValueError(f"pod CIDR {cidr!r} is not IPv4")
    if subnet.prefixlen > 30:
        raise ValueError(f"pod CIDR {cidr!r} is too small: it needs a gateway and pod addresses")
    return subnet


class HostLocalIPAM:
    """Allocates one IPv4 per sandbox id from a subnet; .1 is the gateway, pods get .2 up to the last host."""

    def __init__(self, state_dir: str | os.PathLike[str], subnet: str) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._subnet = parse_subnet(subnet)
        self._by_id: dict[str, IPv4Address] = {}
        self._last: IPv4Address | None = None
        self._load()

    @property
    def subnet(self) -> IPv4Network:
        """The subnet new addresses come from."""
        return self._subnet

    @property
    def gateway(self) -> IPv4Interface:
        """The bridge's address in the current subnet: its first host address, with the subnet's prefix."""
        return IPv4Interface(f"{self._subnet.network_address + 1}/{self._subnet.prefixlen}")

    def set_subnet(self, subnet: str) -> None:
        """Allocate from another subnet from now on; reservations made in the old one stay until released."""
        new = parse_subnet(subnet)
        with self._lock:
            self._subnet = new

    def _load(self) -> None:
        try:
            self._last = IPv4Address((self.state_dir / LAST_RESERVED).read_text().strip())
        except (OSError, ValueError):
            self._last = None
        for path in self.state_dir.iterdir():
            try:
                ip = IPv4Address(path.name)
            except ValueError:
                continue
            owner = path.read_text().strip()
            if owner in self._by_id:
                path.unlink(missing_ok=True)
            elif owner:
                self._by_id[owner] = ip

    def lookup(self, sandbox_id: str) -> IPv4Address | None:
        """The address reserved for sandbox_id, if any."""
        return self._by_id.get(sandbox_id)

    def reservations(self) -> dict[str, IPv4Address]:
        """Every reservation, sandbox id to address, whatever subnet it came from."""
        with self._lock:
            return dict(self._by_id)

    def allocate(self, sandbox_id: str) -> IPv4Address:
        """Reserve an address for sandbox_id, or return the one it already has (setup is idempotent)."""
        check_sandbox_id(sandbox_id)
        with self._lock:
            known = self._by_id.get(sandbox_id)
            if known is not None:
                return known
            for ip in self._candidates():
                if self._reserve(ip, sandbox_id):
                    self._by_id[sandbox_id] = ip
                    (self.state_dir / LAST_RESERVED).write_text(str(ip))
                    self._last = ip
                    return ip
            usable = self._subnet.num_addresses - 3
            raise IPAMExhaustedError(f"no free IP in pod CIDR {self._subnet}: all {usable} pod addresses are reserved")

    def release(self, sandbox_id: str) -> IPv4Address | None:
        """Free the address of sandbox_id and return it; None if it had none (teardown is idempotent)."""
        with self._lock:
            ip = self._by_id.pop(sandbox_id, None)
            if ip is not None:
                (self.state_dir / str(ip)).unlink(missing_ok=True)
            return ip

    def _candidates(self) -> Iterator[IPv4Address]:
        first = int(self._subnet.network_address) + 2
        last = int(self._subnet.broadcast_address) - 1
        start = first
        previous = None if self._last is None else int(self._last)
        if previous is not None and first <= previous < last:
            start = previous + 1
        for n in itertools.chain(range(start, last + 1), range(first, start)):
            yield IPv4Address(n)

    def _reserve(self, ip: IPv4Address, sandbox_id: str) -> bool:
        try:
            fd = os.open(self.state_dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, sandbox_id.encode())
        finally:
            os.close(fd)
        return True
