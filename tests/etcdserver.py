"""A throwaway single-member etcd for tests: the real /usr/bin/etcd on free loopback ports in a folder."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ETCD = "/usr/bin/etcd"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_etcd(folder: Path, ports: tuple[int, int] | None = None) -> Iterator[str]:
    """Start etcd with its data in folder (on the given client and peer ports, to restart one), yield its client
    URL once it answers, then kill it."""
    if not os.path.exists(ETCD):
        pytest.fail(f"{ETCD} is missing: install Debian's etcd-server (the etcd backend tests need a real etcd)")
    folder.mkdir(parents=True, exist_ok=True)
    client_port, peer_port = ports or (free_port(), free_port())
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    log = folder / "etcd.log"
    proc = subprocess.Popen(
        [ETCD, "--data-dir", str(folder / "data"), "--listen-client-urls", client, "--advertise-client-urls", client,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}",
         "--heartbeat-interval", "10", "--election-timeout", "100"],  # a single member elects itself sooner
        stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"etcd did not start: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(urllib.request.Request(f"{client}/v3/maintenance/status", b"{}"), timeout=1)
                break
            except OSError:
                time.sleep(0.02)
        yield client
    finally:
        proc.kill()
        proc.wait()
