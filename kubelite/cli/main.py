"""The `kubelite` command: server (supervisor), the control-plane components, and node agents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

from kubelite import KUBERNETES_VERSION, __version__
from kubelite.cli.image import image

DEFAULT_DATA_DIR = "/var/lib/kubelite"
DEFAULT_KUBECONFIG = "/etc/kubelite/kubelite.yaml"
POD_NETWORK_BACKENDS = ("host-gw", "vxlan")
"""kubelite.kubelet.network.routes.BACKENDS, spelled out to keep the CLI's imports light."""
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
"""kubelite.kubelet.network.cni.DEFAULT_CONF_DIR, likewise."""


QUIET_LIBRARIES = ("asyncio",)
"""Libraries whose debug output drowns ours: kept at INFO even with --verbose."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO)


def _run(coro: object) -> None:
    """Run a coroutine on uvloop until it ends or SIGTERM/SIGINT cancels it."""
    import uvloop

    async def main() -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    uvloop.run(main())


def storage_options(fn: click.decorators.FC) -> click.decorators.FC:
    """Flags shared by `server` and `apiserver` (k3s's names)."""
    for option in reversed([
        click.option("--data-dir", "-d", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(),
                     help="Folder for state: datastore, certificates, tokens."),
        click.option("--bind-address", default="0.0.0.0", show_default=True, help="Address to listen on."),
        click.option("--https-port", default=6443, show_default=True, type=int, help="HTTPS port of the API."),
        click.option("--advertise-address", default="",
                     help="Address the `kubernetes` Service points at (default: --bind-address, or this machine's "
                          "address when binding all)."),
        click.option("--datastore-endpoint", default="",
                     help="sqlite:///PATH, or etcd's client URLs: http://HOST:2379[,http://HOST2:2379] "
                          "(default: SQLite in the data dir)."),
        click.option("--tls-san", multiple=True, help="Extra host name or IP for the serving certificate."),
        click.option("--service-cidr", default="10.43.0.0/16", show_default=True, help="Service ClusterIP range."),
        click.option("--disable-admission-plugins", default="",
                     help="Comma-separated admission plugins to turn off: Priority, ServiceAccount, "
                          "DefaultStorageClass, PersistentVolumeClaimResize, StorageObjectInUseProtection."),
        click.option("--default-local-storage-path", default="",
                     help="Where the default StorageClass local-path puts volumes on each node, when it is made "
                          "(default: DATA-DIR/storage)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
    ]):
        fn = option(fn)
    return fn


def _config(data_dir: str, bind_address: str, https_port: int, advertise_address: str, datastore_endpoint: str,
            tls_san: tuple[str, ...], service_cidr: str, disable_admission_plugins: str,
            default_local_storage_path: str):  # noqa: ANN202 - imported lazily for a fast CLI
    from kubelite.apiserver.app import ApiServerConfig
    from kubelite.kubelet.node import default_address
    if not advertise_address:
        advertise_address = bind_address if bind_address not in ("0.0.0.0", "::") else default_address()
    try:
        return ApiServerConfig(data_dir=Path(data_dir), bind_address=bind_address, https_port=https_port,
                               datastore_endpoint=datastore_endpoint, service_cidr=service_cidr,
                               tls_san=list(tls_san), advertise_address=advertise_address,
                               local_storage_path=Path(default_local_storage_path or Path(data_dir) / "storage"),
                               disable_admission_plugins=[p.strip() for p in disable_admission_plugins.split(",")
                                                          if p.strip()])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--disable-admission-plugins") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(f"{__version__} (Kubernetes {KUBERNETES_VERSION})", prog_name="kubelite")
def main() -> None:
    """kubelite: Kubernetes, written in Python."""


@main.command()
@storage_options
def apiserver(verbose: bool, **kwargs: object) -> None:
    """Run the API server alone."""
    _setup_logging(verbose)
    from kubelite.apiserver.app import run_apiserver
    _run(run_apiserver(_config(**kwargs)))  # type: ignore[arg-type]


COMPONENT_IDENTITIES = {
    "scheduler": ("system:kube-scheduler", []),
    "controller-manager": ("system:kube-controller-manager", []),
}


@main.command()
@storage_options
@click.option("--write-kubeconfig", "-o", default=DEFAULT_KUBECONFIG, show_default=True, type=click.Path(),
              help="Where to write the admin kubeconfig (mode 0600).")
@click.option("--disable-agent", is_flag=True, help="Run only the control plane, no local node agent.")
@click.option("--node-name", default=None, help="The local agent's node name (default: the host name).")
@click.option("--disable-scheduler", is_flag=True, help="Do not run the scheduler.")
@click.option("--disable-controller-manager", is_flag=True, help="Do not run the controller-manager.")
@click.option("--private-registry", default=None, help="The local agent's registries.yaml (see `agent`).")
@click.option("--pod-network-backend", type=click.Choice(POD_NETWORK_BACKENDS), default=None,
              help="The local agent's pod network backend (see `agent`).")
@click.option("--container-runtime-endpoint", default=None,
              help="The local agent's CRI runtime socket, e.g. unix:///run/containerd/containerd.sock (see `agent`).")
@click.option("--cni-conf-dir", default=None, help="Where the local agent writes the CNI config (see `agent`).")
def server(verbose: bool, write_kubeconfig: str, disable_agent: bool, node_name: str | None, disable_scheduler: bool,
           disable_controller_manager: bool, private_registry: str | None, pod_network_backend: str | None,
           container_runtime_endpoint: str | None, cni_conf_dir: str | None, **kwargs: object) -> None:
    """Start the control plane and a local node agent (each its own process); write the admin kubeconfig."""
    _setup_logging(verbose)
    from kubelite.apiserver import pki
    from kubelite.cli.supervisor import Component, supervise
    config = _config(**kwargs)  # type: ignore[arg-type]
    if container_runtime_endpoint:
        container_runtime_endpoint = _cri_endpoint(container_runtime_endpoint)
    hosts = [h for h in {config.bind_address, config.advertise_address, *config.tls_san} if h and h != "0.0.0.0"]
    certs = pki.ensure_pki(config.server_dir / "tls", hosts)
    host = config.advertise_address if config.bind_address in ("0.0.0.0", "::") else config.bind_address
    url = f"https://{host}:{config.https_port}"
    pki.write_kubeconfig(Path(write_kubeconfig), url, certs)
    log = logging.getLogger("kubelite")
    log.info("wrote kubeconfig %s", write_kubeconfig)
    args = ["apiserver", "--data-dir", str(config.data_dir), "--bind-address", config.bind_address,
            "--https-port", str(config.https_port), "--advertise-address", config.advertise_address,
            "--service-cidr", config.service_cidr, "--default-local-storage-path", str(config.local_storage_path)]
    if config.datastore_endpoint:
        args += ["--datastore-endpoint", config.datastore_endpoint]
    for san in config.tls_san:
        args += ["--tls-san", san]
    if config.disable_admission_plugins:
        args += ["--disable-admission-plugins", ",".join(config.disable_admission_plugins)]
    extra = ["--verbose"] if verbose else []
    components = [Component("apiserver", args + extra)]
    for name, disabled in (("scheduler", disable_scheduler), ("controller-manager", disable_controller_manager)):
        if disabled:
            continue
        user, groups = COMPONENT_IDENTITIES[name]
        kubeconfig = config.server_dir / "cred" / f"{name}.kubeconfig"
        pki.write_kubeconfig(kubeconfig, url, certs, pki.issue_client_cert(certs, user, groups))
        components.append(Component(name, [name, "--kubeconfig", str(kubeconfig), *extra]))
    if not disable_agent:
        node = node_name or socket.gethostname().lower()
        kubeconfig = config.data_dir / "agent" / "kubelet.kubeconfig"
        pki.write_kubeconfig(kubeconfig, url, certs, pki.issue_client_cert(certs, f"system:node:{node}",
                                                                           ["system:nodes"]))
        agent_args = ["agent", "--kubeconfig", str(kubeconfig), "--node-name", node, "--data-dir", str(config.data_dir)]
        if private_registry:
            agent_args += ["--private-registry", private_registry]
        if pod_network_backend:
            agent_args += ["--pod-network-backend", pod_network_backend]
        if container_runtime_endpoint:
            agent_args += ["--container-runtime-endpoint", container_runtime_endpoint]
        if cni_conf_dir:
            agent_args += ["--cni-conf-dir", cni_conf_dir]
        components.append(Component("agent", agent_args + extra))
    asyncio.run(supervise(components))


def _cri_endpoint(text: str) -> str:
    """The endpoint as `unix:///path`, or a usage error naming the flag."""
    from kubelite.kubelet.agent import cri_endpoint
    try:
        return cri_endpoint(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--container-runtime-endpoint") from None


def kubeconfig_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--kubeconfig", default=None, type=click.Path(),
                        help="Kubeconfig of the API server (default: $KUBECONFIG, in-cluster, ~/.kube/config).")(fn)


@main.command()
@kubeconfig_option
@click.option("--config", "config_file", default=None, type=click.Path(exists=True),
              help="KubeSchedulerConfiguration file (profiles, plugins).")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def scheduler(kubeconfig: str | None, config_file: str | None, leader_elect: bool, verbose: bool) -> None:
    """Run the scheduler: bind pending pods to nodes."""
    _setup_logging(verbose)
    from kubelite.scheduler.app import run_scheduler
    _run(run_scheduler(kubeconfig, config_file, leader_elect))


@main.command("controller-manager")
@kubeconfig_option
@click.option("--controllers", default="*", show_default=True,
              help="Comma-separated controllers: '*' for all, 'foo' to enable, '-foo' to disable.")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def controller_manager(kubeconfig: str | None, controllers: str, leader_elect: bool, verbose: bool) -> None:
    """Run the controllers that move the cluster to its desired state."""
    _setup_logging(verbose)
    from kubelite.controllers.app import run_controller_manager
    _run(run_controller_manager(kubeconfig, [c.strip() for c in controllers.split(",") if c.strip()],
                                leader_elect))


def node_options(fn: click.decorators.FC) -> click.decorators.FC:
    """How a node agent finds its API server, and what a hollow node reports."""
    for option in reversed([
        kubeconfig_option,
        click.option("--server", default=None, help="API server URL, e.g. https://HOST:6443 (with --token)."),
        click.option("--token", default=None, help="The node token from the server's DATA/server/node-token."),
        click.option("--node-name-prefix", default="hollow-node", show_default=True,
                     help="Hollow nodes are named PREFIX-<i>."),
        click.option("--cpu", default="4", show_default=True, help="CPU capacity of a hollow node."),
        click.option("--memory", default="16Gi", show_default=True, help="Memory capacity of a hollow node."),
        click.option("--max-pods", default=110, show_default=True, type=int, help="Pod capacity of a hollow node."),
        click.option("--node-label", multiple=True, help="KEY=VALUE label on the node (repeatable)."),
        click.option("--node-taint", multiple=True, help="KEY=VALUE:EFFECT taint on the node (repeatable)."),
        click.option("-v", "--verbose", is_flag=True),
    ]):
        fn = option(fn)
    return fn


def _run_hollow(names: list[str], kubeconfig: str | None, server: str | None, token: str | None, cpu: str,
                memory: str, max_pods: int, node_label: tuple[str, ...], node_taint: tuple[str, ...],
                verbose: bool) -> None:
    """Connect as an agent would (kubeconfig, or server URL and node token) and run these hollow nodes."""
    _setup_logging(verbose)
    from kubelite.kubelet.hollow import run_hollow_nodes
    from kubelite.kubelet.node import parse_labels, parse_taints
    config = _client_config(kubeconfig, server, token)
    _run(run_hollow_nodes(config, names, cpu, memory, max_pods, parse_labels(node_label), parse_taints(node_taint)))


@main.command("hollow-nodes")
@node_options
@click.option("--count", default=1, show_default=True, type=int, help="How many hollow nodes to run.")
def hollow_nodes(count: int, node_name_prefix: str, **kwargs: Any) -> None:
    """Simulate nodes (no containers): they register, heartbeat and run their pods, for scale tests."""
    from kubelite.kubelet.hollow import fleet_names
    _run_hollow(fleet_names(node_name_prefix, count), **kwargs)


def _client_config(kubeconfig: str | None, server: str | None, token: str | None) -> Any:
    """An agent's connection: the server URL and node token (CA pinned by the token), or a kubeconfig."""
    from kubelite.client.config import load_config
    from kubelite.client.join import join_config
    if bool(server) != bool(token):
        raise click.UsageError("--server and --token go together (or use --kubeconfig)")
    return join_config(server, token) if server and token else load_config(kubeconfig)


@main.command()
@node_options
@click.option("--runtime", type=click.Choice(["runc", "fake"]), default="runc", show_default=True,
              help="Container runtime: runc runs real containers; fake runs a hollow node (no containers).")
@click.option("--node-name", default=None, help="The node's name (default: the host name; with --runtime fake, "
                                                "PREFIX-0 from --node-name-prefix).")
@click.option("--node-ip", default="", help="The node's InternalIP (default: the address of the default route).")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(),
              help="Where the agent keeps images, containers and pod volumes (under DATA/agent).")
@click.option("--private-registry", default="/etc/kubelite/registries.yaml", show_default=True,
              help="Registry mirrors and credentials (k3s's registries.yaml).")
@click.option("--eviction-hard", default="", help="Hard eviction thresholds over the defaults, as the kubelet's: "
                                                  "memory.available<100Mi,nodefs.available<10%.")
@click.option("--pod-network-backend", type=click.Choice(POD_NETWORK_BACKENDS), default="host-gw", show_default=True,
              help="How pods reach pods on other nodes: host-gw (routes via node IPs on a shared link) or vxlan.")
@click.option("--cleanup", is_flag=True, help="Remove the node's Service rules when the agent stops.")
@click.option("--container-runtime-endpoint", default="",
              help="Run pods with this CRI runtime instead of the embedded runc: its socket, e.g. "
                   "unix:///run/containerd/containerd.sock. Images are then the runtime's (pulled and configured "
                   "by it), and the runtime's CNI plugins (bridge, host-local, portmap) wire pods up from the config "
                   "the agent writes to --cni-conf-dir.")
@click.option("--cni-conf-dir", default=DEFAULT_CNI_CONF_DIR, show_default=True, type=click.Path(),
              help="The CRI runtime's CNI config directory, where the agent writes its network config.")
def agent(runtime: str, node_name: str | None, node_name_prefix: str, node_ip: str, data_dir: str,
          private_registry: str, eviction_hard: str, pod_network_backend: str, cleanup: bool,
          container_runtime_endpoint: str, cni_conf_dir: str, **kwargs: Any) -> None:
    """Join a cluster as a node (with --server and --token, or --kubeconfig) and run the pods bound to it."""
    if runtime == "fake":
        from kubelite.kubelet.hollow import fleet_names
        _run_hollow([node_name] if node_name else fleet_names(node_name_prefix, 1), **kwargs)
        return
    _setup_logging(kwargs["verbose"])
    from kubelite.kubelet.agent import AgentConfig, AgentStartError, run_agent
    from kubelite.kubelet.eviction import ThresholdError, parse_eviction_hard
    from kubelite.kubelet.node import parse_labels, parse_taints
    try:
        thresholds = parse_eviction_hard(eviction_hard)
    except ThresholdError as exc:
        raise click.BadParameter(str(exc), param_hint="--eviction-hard") from None
    config = AgentConfig(data_dir=Path(data_dir), node_ip=node_ip, labels=parse_labels(kwargs["node_label"]),
                         taints=parse_taints(kwargs["node_taint"]), private_registry=Path(private_registry),
                         thresholds=thresholds, pod_network_backend=pod_network_backend, cleanup=cleanup,
                         container_runtime_endpoint=_cri_endpoint(container_runtime_endpoint)
                         if container_runtime_endpoint else "", cni_conf_dir=Path(cni_conf_dir))
    if node_name:
        config.node_name = node_name
    joined = bool(kwargs["server"] and kwargs["token"])
    try:
        _run(run_agent(_client_config(kwargs["kubeconfig"], kwargs["server"], kwargs["token"]), config,
                       joined_with_token=joined))
    except AgentStartError as exc:
        raise click.ClickException(str(exc)) from None


main.add_command(image)
