"""A real multi-node kubelite cluster on one host, for tests: each "machine" is a network namespace `kl-<node>` with
a veth on the host bridge `klmn0` (172.31.0.0/24, the host at .254); `kubelite server` with its own agent runs in
the first, `kubelite agent`s join from the others, and a plain-HTTP docker-registry on the host's bridge address
serves images to all of them.

    with multinode_cluster(tmp_path, nodes=3, backend="vxlan") as cluster:
        cluster.kubectl("get", "nodes")                 # from the host, through the bridge
        cluster.run_on("node-2", "ip", "route")         # a command in node-2's network namespace
        cluster.kill_agent("node-3")                    # kill -9

A machine's kubelite runs in the machine's network namespace and a mount namespace of its own whose /sys belongs to
that network namespace (the network code reads /sys/class/net), with the host's cgroup hierarchies bound back in:
`ip netns exec` would remount /sys too, but lose the cgroup hierarchies runc needs. Mounts the agent makes (pod
namespace pins, container root filesystems) live in that mount namespace and vanish with its last process.

Teardown stops every process, deletes what runc still runs, kills whatever is left in each node's cgroups and removes
them, unmounts what is left under the node's directories (as seen from the host) and removes its runtime state, then
deletes the namespaces, the bridge and the registry; it runs even when setup fails half way, and raises if something
could not be removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kubelite.kubelet.network.routes import ROUTE_PROTOCOL
from tests.e2e.conftest import Cluster
from tests.images import busybox_image, push
from tests.registry import REGISTRY_BIN, Registry, stop_registry

BRIDGE = "klmn0"
SUBNET = "172.31.0"
HOST_ADDRESS = f"{SUBNET}.254"
PREFIX_LEN = 24
NETNS_PREFIX = "kl-"
API_PORT = 6443
RUN_ROOT = Path("/run/kubelite")
CGROUP_ROOT = "kubelite"
IMAGE = ("busybox", "1.36")
STOP_GRACE = 20.0
MACHINE_MOUNTS = ('mount --rbind /sys "$0" && mount -t sysfs sysfs /sys && mount --rbind "$0/fs/cgroup" /sys/fs/cgroup'
                  ' && umount --lazy "$0" && exec "$@"')
"""Run in a fresh mount namespace with the directory to park the host's /sys in as $0: a sysfs of the current network
namespace on /sys, the host's cgroup hierarchies under it, then exec the command."""


@dataclass
class Machine:
    """One simulated host: a network namespace with an address on the bridge, and its kubelite process."""

    name: str
    index: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        """The machine's named network namespace (under /run/netns)."""
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def address(self) -> str:
        """The machine's address on the bridge: its node IP."""
        return f"{SUBNET}.{self.index}"

    @property
    def host_veth(self) -> str:
        """The host end of the machine's link to the bridge."""
        return f"{BRIDGE}-{self.index}"

    @property
    def run_dir(self) -> Path:
        """The node's host-global runtime state (runc root, namespace pins), as AgentConfig.run_dir lays it out."""
        return RUN_ROOT / self.name

    @property
    def log(self) -> Path:
        """Where the machine's kubelite process writes its output."""
        return self.data_dir / "kubelite.log"


@dataclass
class MultiNodeCluster(Cluster):
    """A running multi-node cluster: Cluster's kubectl/get_json work from the host (its raw `http` helper does not:
    it assumes loopback)."""

    machines: dict[str, Machine] = field(default_factory=dict)
    registry: Registry | None = None
    image: str = ""
    """The busybox image reference every node can pull."""
    backend: str = "host-gw"

    def run_on(self, node: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's network namespace (the host's mounts and processes)."""
        result = subprocess.run(["nsenter", f"--net=/run/netns/{self.machines[node].netns}", "--", *cmd],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} on {node} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def agent_pid(self, node: str) -> int | None:
        """The pid of the node's agent: the server's supervised child on the first node, else the agent itself."""
        machine = self.machines[node]
        if machine.proc is self.proc:
            return self.component_pid("agent")
        return machine.proc.pid if machine.proc is not None and machine.proc.poll() is None else None

    def kill_agent(self, node: str) -> None:
        """kill -9 the node's agent (its containers keep running; the server's supervisor restarts its own agent)."""
        pid = self.agent_pid(node)
        if pid is None:
            raise AssertionError(f"no agent runs on {node}")
        os.kill(pid, signal.SIGKILL)
        machine = self.machines[node]
        if machine.proc is not None and machine.proc is not self.proc:
            machine.proc.wait(10)

    def node_ready(self, node: str) -> str:
        """The status of the node's Ready condition ("True", "False", "Unknown"), "" without one."""
        conditions = self.get_json("node", node)["status"].get("conditions") or []
        return next((c["status"] for c in conditions if c["type"] == "Ready"), "")


def eventually(check: Callable[[], object], within: float, what: str, interval: float = 0.5) -> object:
    """Poll check until it returns something truthy (exceptions count as not yet); AssertionError after `within`."""
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, IndexError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"not within {within} s: {what} (last: {last!r})")


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return Path("/run/netns", name).exists()
    return _run("ip", "link", "show", name, check=False).returncode == 0


def create_network(machines: list[Machine]) -> None:
    """The bridge with the host's address, and per machine a namespace wired to it, forwarding on, lo up."""
    leftovers = [f"bridge {BRIDGE}"] if _exists("link", BRIDGE) else []
    leftovers += [f"netns {m.netns}" for m in machines if _exists("netns", m.netns)]
    leftovers += [str(m.run_dir) for m in machines if m.run_dir.exists()]
    if leftovers:
        raise RuntimeError(f"another multi-node cluster runs, or one left {', '.join(leftovers)} behind")
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX_LEN}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    for machine in machines:
        _run("ip", "netns", "add", machine.netns)
        _run("ip", "link", "add", machine.host_veth, "type", "veth", "peer", "name", "eth0", "netns", machine.netns)
        _run("ip", "link", "set", machine.host_veth, "master", BRIDGE, "up")
        _run("ip", "-n", machine.netns, "addr", "add", f"{machine.address}/{PREFIX_LEN}", "dev", "eth0")
        for link in ("lo", "eth0"):
            _run("ip", "-n", machine.netns, "link", "set", link, "up")
        _run("ip", "-n", machine.netns, "route", "add", "default", "via", HOST_ADDRESS)
        _run("nsenter", f"--net=/run/netns/{machine.netns}", "--", "sh", "-c",
             "echo 1 > /proc/sys/net/ipv4/ip_forward")


def start_bridge_registry(workdir: Path) -> Registry:
    """docker-registry listening on the host's bridge address (plain HTTP), reachable from every machine."""
    workdir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind((HOST_ADDRESS, 0))
        port = probe.getsockname()[1]
    config = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
              "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
              "http": {"addr": f"{HOST_ADDRESS}:{port}", "secret": secrets.token_hex(16)}}
    (workdir / "config.yml").write_text(json.dumps(config))
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(workdir / "config.yml")], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://{HOST_ADDRESS}:{port}"
    registry = Registry(url, workdir / "storage", log, proc, url)
    try:
        eventually(lambda: proc.poll() is None and _answers(f"{url}/v2/"), 15, f"docker-registry at {url}", 0.05)
    except BaseException:
        stop_registry(registry)
        raise
    return registry


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True


def registries_yaml(path: Path, registry: Registry) -> Path:
    """The agents' registries.yaml: the bridge registry is a mirror of itself over plain HTTP."""
    path.write_text(json.dumps({"mirrors": {registry.host: {"endpoint": [registry.url]}}}))
    return path


def _spawn(machine: Machine, *args: str) -> subprocess.Popen[bytes]:
    """`kubelite ARGS` on the machine: in its network namespace and a mount namespace of its own whose /sys shows
    that network namespace (as `ip netns exec` does) with the host's cgroup hierarchies bound back in."""
    host_sys = machine.data_dir / ".host-sys"
    host_sys.mkdir(exist_ok=True)
    with open(machine.log, "ab") as out:
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{machine.netns}", "--",
                                 "unshare", "--mount", "--propagation", "slave", "--",
                                 "sh", "-c", MACHINE_MOUNTS, str(host_sys), sys.executable, "-m", "kubelite", *args],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def start_server(machine: Machine, registries: Path, backend: str) -> MultiNodeCluster:
    """`kubelite server` with its own agent in the first machine; returns once the API answers from the host."""
    machine.data_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = machine.data_dir / "kubeconfig.yaml"
    machine.proc = _spawn(machine, "server", "--node-name", machine.name, "--data-dir", str(machine.data_dir),
                          "--bind-address", machine.address, "--advertise-address", machine.address,
                          "--https-port", str(API_PORT), "--write-kubeconfig", str(kubeconfig),
                          "--private-registry", str(registries), "--pod-network-backend", backend)
    cluster = MultiNodeCluster(machine.data_dir, kubeconfig, API_PORT, machine.proc, machine.log, backend=backend)

    def api_ready() -> bool:
        if machine.proc is None or machine.proc.poll() is not None:
            raise RuntimeError(f"kubelite server exited: {_tail(machine.log)}")
        return kubeconfig.exists() and cluster.kubectl("get", "--raw", "/readyz", check=False,
                                                       timeout=10).returncode == 0

    try:
        eventually(api_ready, 60, "the API server answering from the host", 0.3)
    except AssertionError as exc:
        raise RuntimeError(f"{exc}\n{_tail(machine.log)}") from None
    return cluster


def start_agent(machine: Machine, server: Machine, token: str, registries: Path, backend: str) -> None:
    """`kubelite agent` in its machine, joining with the node token."""
    machine.data_dir.mkdir(parents=True, exist_ok=True)
    machine.proc = _spawn(machine, "agent", "--server", f"https://{server.address}:{API_PORT}", "--token", token,
                          "--node-name", machine.name, "--data-dir", str(machine.data_dir),
                          "--private-registry", str(registries), "--pod-network-backend", backend)


def wait_nodes_ready(cluster: MultiNodeCluster, within: float = 90) -> None:
    """Every machine's Node Ready with a podCIDR, and every agent routing to every other node's pods (so each has
    seen its own podCIDR too)."""
    def ready() -> bool:
        for machine in cluster.machines.values():
            if machine.proc is not None and machine.proc.poll() is not None:
                raise RuntimeError(f"kubelite on {machine.name} exited: {_tail(machine.log)}")
        nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
        return all(name in nodes and nodes[name]["spec"].get("podCIDR") and cluster.node_ready(name) == "True"
                   and len(pod_routes(cluster, name)) == len(cluster.machines) - 1 for name in cluster.machines)

    eventually(ready, within, f"nodes {', '.join(cluster.machines)} Ready with a podCIDR and routes to each other")


def pod_routes(cluster: MultiNodeCluster, node: str) -> list[dict]:
    """The routes the node's agent installed (`ip -j route` objects)."""
    out = cluster.run_on(node, "ip", "-j", "route", "show", "proto", str(ROUTE_PROTOCOL)).stdout
    return json.loads(out or "[]")


@contextlib.contextmanager
def multinode_cluster(work: Path, nodes: int = 3, backend: str = "host-gw") -> Iterator[MultiNodeCluster]:
    """A cluster of `nodes` machines (node-1 runs the server) with the busybox image in a registry they share;
    everything is torn down on exit, also when starting it fails."""
    machines = [Machine(f"node-{i}", i, work / f"node-{i}") for i in range(1, nodes + 1)]
    registry: Registry | None = None
    cluster: MultiNodeCluster | None = None
    try:
        create_network(machines)
        registry = start_bridge_registry(work / "registry")
        push(registry.url, *IMAGE, busybox_image())
        registries = registries_yaml(work / "registries.yaml", registry)
        cluster = start_server(machines[0], registries, backend)
        cluster.machines = {m.name: m for m in machines}
        cluster.registry = registry
        cluster.image = f"{registry.host}/{IMAGE[0]}:{IMAGE[1]}"
        token = (machines[0].data_dir / "server" / "node-token").read_text().strip()
        for machine in machines[1:]:
            start_agent(machine, machines[0], token, registries, backend)
        wait_nodes_ready(cluster)
        yield cluster
    finally:
        teardown(machines, registry)


def teardown(machines: list[Machine], registry: Registry | None) -> None:
    """Stop and remove everything the machines ran and made, then the network and the registry; raises at the end
    if anything was left."""
    problems: list[str] = []
    steps: list[tuple[str, Callable[[], None]]] = [(f"stopping {m.name}", lambda m=m: _stop(m)) for m in machines]
    steps += [(f"cleaning {m.name}'s runtime", lambda m=m: clean_runtime(m)) for m in machines]
    steps += [(f"deleting netns {m.netns}", lambda m=m: _delete_netns(m)) for m in machines]
    steps.append((f"deleting bridge {BRIDGE}", _delete_bridge))
    if registry is not None:
        steps.append(("stopping the registry", lambda: stop_registry(registry)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            problems.append(f"{what}: {exc}")
    problems += leftovers(machines)
    if problems:
        raise RuntimeError("multi-node teardown left things behind:\n" + "\n".join(problems))


def _stop(machine: Machine) -> None:
    proc = machine.proc
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cgroup_dirs(node: str) -> list[Path]:
    """The node's cgroup directory in every mounted hierarchy (cgroupfs, as the runtime lays them out)."""
    roots = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fstype = line.partition(" - ")[2].split(" ")[0]
        if fstype in ("cgroup", "cgroup2"):
            roots.add(Path(line.split(" ")[4]))
    return [root / CGROUP_ROOT / node for root in sorted(roots) if (root / CGROUP_ROOT / node).is_dir()]


def _mounts_under(prefixes: list[Path]) -> list[str]:
    """Mount points at or below any prefix, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def clean_runtime(machine: Machine) -> None:
    """Delete the node's runc containers (killing them), kill whatever is left in its cgroups and remove them,
    unmount everything under its run and data directories, and remove its run directory."""
    runc_root = machine.run_dir / "runc"
    if runc_root.is_dir():
        listed = _run("runc", "--root", str(runc_root), "list", "-q", check=False).stdout.split()
        for container in listed:
            _run("runc", "--root", str(runc_root), "delete", "--force", container, check=False)
    cgroups = _cgroup_dirs(machine.name)

    def procs_left() -> list[int]:
        pids = set()
        for root in cgroups:
            for procs in root.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(pid) for pid in procs.read_text().split())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return sorted(pids)

    eventually(lambda: not procs_left(), 15, f"no process left in {machine.name}'s cgroups", 0.1)
    for root in cgroups:
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True) + [root]:
            directory.rmdir()
    for point in _mounts_under([machine.run_dir, machine.data_dir]):
        _run("umount", "--lazy", point)
    if machine.run_dir.exists():
        shutil.rmtree(machine.run_dir)


def _delete_netns(machine: Machine) -> None:
    if _exists("link", machine.host_veth):
        _run("ip", "link", "del", machine.host_veth)
    if _exists("netns", machine.netns):
        _run("ip", "netns", "del", machine.netns)


def _delete_bridge() -> None:
    if _exists("link", BRIDGE):
        _run("ip", "link", "del", BRIDGE)


def leftovers(machines: list[Machine]) -> list[str]:
    """What the machines could still hold on the host: processes, mounts, cgroups, run dirs, namespaces, links."""
    found = [f"{m.name}: process {m.proc.pid} still runs" for m in machines if m.proc and m.proc.poll() is None]
    found += [f"mount {p}" for p in _mounts_under([p for m in machines for p in (m.run_dir, m.data_dir)])]
    found += [f"cgroup {d}" for m in machines for d in _cgroup_dirs(m.name)]
    found += [f"directory {m.run_dir}" for m in machines if m.run_dir.exists()]
    found += [f"netns {m.netns}" for m in machines if _exists("netns", m.netns)]
    found += [f"link {name}" for name in [BRIDGE, *(m.host_veth for m in machines)] if _exists("link", name)]
    return found
