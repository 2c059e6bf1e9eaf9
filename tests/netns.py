"""Named network namespaces under /run/netns for tests and benchmarks, made and removed with iproute2."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def _name(path: str) -> str:
    if Path(path).parent != NETNS_DIR:
        raise ValueError(f"{path} is not a named network namespace (under {NETNS_DIR})")
    return Path(path).name


def create(path: str) -> None:
    """A new network namespace pinned at /run/netns/NAME."""
    subprocess.run(["ip", "netns", "add", _name(path)], check=True, capture_output=True, text=True)


def remove(path: str) -> None:
    """Remove the namespace at path; OSError if it is not there."""
    result = subprocess.run(["ip", "netns", "del", _name(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"ip netns del {_name(path)}: {result.stderr.strip()}")


class Namespaces:
    """Network namespaces made for one test (named after this process, so parallel runs never clash), removed at the
    end; the `namespaces` fixture of tests/integration."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def make(self, name: str) -> str:
        path = str(NETNS_DIR / f"kltest-{os.getpid() % 10000}-{name}")
        if os.path.exists(path):
            remove(path)
        create(path)
        self.paths.append(path)
        return path

    def remove(self, path: str) -> None:
        remove(path)
        self.paths.remove(path)

    def cleanup(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                remove(path)
