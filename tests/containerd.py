"""A real containerd 1.6 (Debian's) with its CRI plugin, for tests of the kubelet's `cri` runtime.

Everything of it lives under one temporary directory: its config, root and state, its socket, runc's state, the
network namespaces it pins, the CNI config directory the kubelet writes into, and the hosts directory that tells it
which local registries speak plain HTTP. Its sandbox (pause) image is built from busybox-static and pushed to a
local docker-registry of its own, which tests may push their images to as well (`registry`); any other local
registry becomes pullable with `trust`.

Stopping it kills what it left: containers (through runc, by their state under our runc root), shims started for
our socket, then unmounts everything under its directory and removes the iptables chains the portmap plugin made
and the nat tables iptables made for them (unless they were there before), so that nothing leaks into other tests.

The fixture is registered for every test by the root conftest.py; or call start_containerd/stop_containerd.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubelite.kubelet.runtime import syscalls
from tests.images import busybox_image, push
from tests.registry import Registry, start_registry, stop_registry

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
CNI_BIN_DIR = "/usr/lib/cni"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
K8S_NAMESPACE = "k8s.io"
PAUSE = ("kubelite/pause", "3.9")
PAUSE_SCRIPT = 'trap "exit 0" INT TERM; while :; do sleep 86400 & wait $!; done'
"""The sandbox's process: sleeps forever, leaves at once on SIGTERM/SIGINT (as PID 1 it has no default action)."""
START_TIMEOUT = 30.0
STOP_GRACE = 10.0
CNI_CHAIN_PREFIX = "CNI-"
"""The portmap plugin's iptables chains (nat table) start so; it never removes its top chains."""
NAT_TABLES = {"ip": "iptables", "ip6": "ip6tables"}
"""The nftables families whose `nat` table iptables-nft makes (for the portmap plugin), and their iptables."""


@dataclass
class Containerd:
    """A running containerd and what a kubelet needs to use it."""

    workdir: Path
    proc: subprocess.Popen[bytes]
    registry: Registry
    """The local registry holding the pause image; tests may push their images here."""
    pause_image: str
    tables_before: frozenset[str] = frozenset()
    """The nftables tables there before this containerd started (`ip nat`, ...)."""
    had_cni_chains: bool = False
    """Whether CNI plugins' iptables chains were there before this containerd started (then they are left alone)."""

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        """What `--container-runtime-endpoint` takes."""
        return f"unix://{self.socket}"

    @property
    def cni_conf_dir(self) -> Path:
        """Where the kubelet writes its CNI network config (`--cni-conf-dir`)."""
        return self.workdir / "net.d"

    @property
    def log(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def runc_root(self) -> Path:
        """runc's state of the CRI plugin's containers (the shim adds the namespace to the configured Root)."""
        return self.workdir / "state" / "runc" / K8S_NAMESPACE

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ctr` against this containerd, in the CRI plugin's namespace."""
        result = subprocess.run([CTR, "--address", str(self.socket), "--namespace", K8S_NAMESPACE, *args],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def trust(self, registry: Registry) -> None:
        """Let the CRI plugin pull from another plain-HTTP local registry (hosts.toml is read at every pull)."""
        write_hosts(self.workdir / "certs.d", registry.host)

    def containers(self) -> list[str]:
        """Ids of the containers (sandboxes included) runc runs for this containerd."""
        return runc_ids(self.runc_root)


def write_hosts(certs_dir: Path, host: str) -> None:
    """A hosts.toml saying that `host` (host:port) is a plain-HTTP registry to pull and resolve from."""
    directory = certs_dir / host
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(
        f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n')


def _toml(value: object) -> str:
    """A TOML value for the few types the config uses (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


def render_config(workdir: Path, pause_image: str) -> str:
    """containerd's config (version 2) keeping all its state under workdir, with the CRI plugin set up for the
    kubelet: our pause image, overlayfs, runc (cgroupfs) with its state under workdir, the Debian CNI plugins and a
    conf dir of our own, registries from workdir/certs.d, and no negative OOM score adjustments (this machine
    forbids them)."""
    cri = f'plugins."{CRI_PLUGIN}"'
    tables: dict[str, dict[str, object]] = {
        "": {"version": 2, "root": workdir / "root", "state": workdir / "state", "temp": workdir / "tmp",
             "required_plugins": [CRI_PLUGIN]},
        "grpc": {"address": workdir / "containerd.sock"},
        'plugins."io.containerd.internal.v1.opt"': {"path": workdir / "opt"},
        cri: {"sandbox_image": pause_image, "restrict_oom_score_adj": True, "netns_mounts_under_state_dir": True,
              "stream_server_address": "127.0.0.1", "stream_server_port": "0", "enable_tls_streaming": False},
        f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
        f"{cri}.containerd.runtimes.runc": {"runtime_type": "io.containerd.runc.v2"},
        f"{cri}.containerd.runtimes.runc.options": {"BinaryName": RUNC, "Root": workdir / "state" / "runc",
                                                     "SystemdCgroup": False},
        f"{cri}.cni": {"bin_dir": CNI_BIN_DIR, "conf_dir": workdir / "net.d", "max_conf_num": 1},
        f"{cri}.registry": {"config_path": workdir / "certs.d"},
    }
    lines = []
    for table, keys in tables.items():
        if table:
            lines.append(f"\n[{table}]")
        lines += [f"{key} = {_toml(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def _wait_ready(daemon: Containerd, timeout: float = START_TIMEOUT) -> None:
    """Until the socket answers and the CRI plugin loaded; RuntimeError with the log otherwise."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"containerd exited with {daemon.proc.returncode}:\n{daemon.log.read_text()[-3000:]}")
        if daemon.socket.exists():
            listed = subprocess.run([CTR, "--address", str(daemon.socket), "plugins", "ls"], capture_output=True,
                                    text=True, timeout=10)
            last = listed.stdout + listed.stderr
            for line in listed.stdout.splitlines():
                fields = line.split()
                if fields[:2] == CRI_PLUGIN.rsplit(".", 1):
                    if fields[-1] == "ok":
                        return
                    raise RuntimeError(f"containerd's CRI plugin is {fields[-1]}:\n{daemon.log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"containerd not ready in {timeout} s ({last.strip()}):\n{daemon.log.read_text()[-3000:]}")


def _nft_tables() -> frozenset[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30, check=False)
    return frozenset(line.removeprefix("table ").strip() for line in listed.stdout.splitlines() if line.strip())


def _nat_rules(tool: str = "iptables") -> list[str]:
    """`iptables -t nat -S`: the nat table's chains and rules, as arguments (iptables makes the table if missing)."""
    listed = subprocess.run([tool, "-t", "nat", "-S"], capture_output=True, text=True, timeout=30, check=False)
    return listed.stdout.splitlines()


def _cni_chains() -> list[str]:
    return [line.split()[1] for line in _nat_rules() if line.startswith(f"-N {CNI_CHAIN_PREFIX}")]


def remove_cni_chains() -> None:
    """Drop the jumps to CNI chains from the built-in chains, then the chains themselves."""
    for line in _nat_rules():
        words = shlex.split(line)
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if words[0] == "-A" and not words[1].startswith(CNI_CHAIN_PREFIX) and target.startswith(CNI_CHAIN_PREFIX):
            subprocess.run(["iptables", "-t", "nat", "-D", *words[1:]], capture_output=True, timeout=30, check=False)
    chains = _cni_chains()
    for flag in ("-F", "-X"):
        for chain in chains:
            subprocess.run(["iptables", "-t", "nat", flag, chain], capture_output=True, timeout=30, check=False)


def remove_empty_nat_tables(keep: frozenset[str]) -> None:
    """Delete the nat tables iptables-nft made (not those in keep) once only its built-in chains are left."""
    present = _nft_tables()
    for family, tool in NAT_TABLES.items():
        table = f"{family} nat"
        if table in present and table not in keep and all(rule.startswith("-P ") for rule in _nat_rules(tool)):
            subprocess.run(["nft", "delete", "table", family, "nat"], capture_output=True, timeout=30, check=False)


def start_containerd(workdir: Path) -> Containerd:
    """Start a registry with the pause image and a containerd using it, under workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    tables_before = _nft_tables()
    had_cni_chains = "ip nat" in tables_before and bool(_cni_chains())
    registry = start_registry(workdir / "registry")
    try:
        push(registry.url, PAUSE[0], PAUSE[1], busybox_image(cmd=("sh", "-c", PAUSE_SCRIPT)))
        pause_image = f"{registry.host}/{PAUSE[0]}:{PAUSE[1]}"
        write_hosts(workdir / "certs.d", registry.host)
        (workdir / "net.d").mkdir(exist_ok=True)
        config = workdir / "config.toml"
        config.write_text(render_config(workdir, pause_image))
        with open(workdir / "containerd.log", "ab") as log:
            # containerd adopts and reaps its shims (they daemonize): without that they would become children
            # of this test process when an agent-like test made it a subreaper, and zombies once they end.
            proc = subprocess.Popen([CONTAINERD, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=syscalls.set_child_subreaper)
    except BaseException:
        stop_registry(registry)
        raise
    daemon = Containerd(workdir, proc, registry, pause_image, tables_before, had_cni_chains)
    try:
        _wait_ready(daemon)
    except BaseException:
        stop_containerd(daemon)
        raise
    return daemon


def runc_ids(root: Path) -> list[str]:
    """The containers runc keeps state for under root."""
    if not root.is_dir():
        return []
    listed = subprocess.run([RUNC, "--root", str(root), "list", "--format", "json"], capture_output=True, text=True,
                            timeout=30)
    return [entry["id"] for entry in json.loads(listed.stdout or "null") or []]


def shim_pids(socket: Path) -> list[int]:
    """The containerd-shim-runc-v2 processes started for the containerd at socket (they outlive it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            found.append(int(entry.name))
    return found


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below directory, deepest first."""
    prefix = str(directory.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def stop_containerd(daemon: Containerd) -> None:
    """Stop containerd, then kill its containers and shims and unmount everything under its directory; raises if
    a mount could not be removed."""
    if daemon.proc.poll() is None:
        os.killpg(daemon.proc.pid, signal.SIGTERM)
        try:
            daemon.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait()
    for container in runc_ids(daemon.runc_root):
        subprocess.run([RUNC, "--root", str(daemon.runc_root), "delete", "--force", container], capture_output=True,
                       timeout=30, check=False)
    for pid in shim_pids(daemon.socket):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    stuck = []
    for point in _mounts_under(daemon.workdir):
        result = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            lazy = subprocess.run(["umount", "--lazy", point], capture_output=True, text=True, check=False)
            if lazy.returncode != 0:
                stuck.append(f"{point}: {result.stderr.strip()}")
    if not daemon.had_cni_chains:
        remove_cni_chains()
    remove_empty_nat_tables(daemon.tables_before)
    stop_registry(daemon.registry)
    if stuck:
        raise RuntimeError("containerd left mounts behind: " + "; ".join(stuck))


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A containerd with the CRI plugin for the whole session, with its own registry (see the module's docstring)."""
    running = start_containerd(tmp_path_factory.mktemp("containerd"))
    yield running
    stop_containerd(running)
