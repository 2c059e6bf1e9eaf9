"""`kubelite image`: pull, list, remove and import images in the node's image store (DATA/agent/images)."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import click

from kubelite.kubelet.images.config import AuthConfig, load_registries
from kubelite.kubelet.images.errors import (
    DigestMismatch,
    ImageError,
    ImageNotFound,
    InvalidReference,
    RegistryConfigError,
    RegistryError,
)
from kubelite.kubelet.images.reference import parse_reference
from kubelite.kubelet.images.store import Image, ImageStore, PullProgress

T = TypeVar("T")
DEFAULT_DATA_DIR = "/var/lib/kubelite"
DEFAULT_REGISTRIES = "/etc/kubelite/registries.yaml"
REFERENCE_HELP = "write it as [REGISTRY/]NAME[:TAG][@sha256:DIGEST], e.g. busybox:1.36 or 127.0.0.1:5000/app:v1"

data_dir_option = click.option("--data-dir", "-d", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(),
                               help="kubelite's data folder; images live in DATA/agent/images.")


def store_root(data_dir: str) -> Path:
    """Where the node's image store lives under the data folder (as k3s keeps its agent's images under agent/)."""
    return Path(data_dir) / "agent" / "images"


def human_size(size: float) -> str:
    """Decimal units as Docker and crictl print them: 1.04MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"


def _run(coroutine: Awaitable[T], data_dir: str, registries: str = "") -> T:
    """Run a store operation; failures become one error line that says what to do next."""
    try:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    except InvalidReference as err:
        raise click.ClickException(f"{err}: {REFERENCE_HELP}") from err
    except RegistryConfigError as err:
        raise click.ClickException(f"{err}: fix the file (k3s's registries.yaml format) or pass --private-registry") \
            from err
    except RegistryError as err:
        raise click.ClickException(f"{err}\n{_registry_hint(err, registries)}") from err
    except DigestMismatch as err:
        raise click.ClickException(f"{err}\nthe registry served corrupt content and nothing was stored; pull again, "
                                   "or check the registry or mirror") from err
    except ImageError as err:
        raise click.ClickException(str(err)) from err
    except PermissionError as err:
        raise click.ClickException(f"{err}\nthe image store at {store_root(data_dir)} needs root: run as root, or "
                                   "pass --data-dir with a folder you can write") from err


def _registry_hint(err: RegistryError, registries: str) -> str:
    if err.status == 404:
        return "check the image name and tag: the registry does not have them (`kubelite image ls` lists local ones)"
    if err.status in (401, 403):
        return (f"pass --creds USER:PASSWORD, or add configs.\"HOST\".auth (username, password) to {registries}")
    if isinstance(err.__cause__, ssl.SSLError) or "SSL" in str(err) or "certificate" in str(err):
        return f"set configs.\"HOST\".tls.ca_file (or insecure_skip_verify) in {registries}"
    return (f"check that the registry is reachable from this machine; without internet, add a mirror "
            f"(mirrors.\"REGISTRY\".endpoint) in {registries}, or `kubelite image import` a saved archive")


class _PlainProgress:
    """One line per step of each blob, for logs and pipes."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, event: PullProgress) -> None:
        if (event.digest, event.status) in self.seen:
            return
        self.seen.add((event.digest, event.status))
        click.echo(f"{event.kind} {event.digest[7:19]}: {event.status} ({human_size(event.total)})")


class _RichProgress:
    """A progress bar per blob, on a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn())
        self.tasks: dict[str, Any] = {}

    def __call__(self, event: PullProgress) -> None:
        task = self.tasks.get(event.digest)
        if task is None:
            task = self.tasks[event.digest] = self.progress.add_task("", total=event.total or 1)
        done = event.status in ("exists", "downloaded", "unpacking", "unpacked")
        self.progress.update(task, completed=event.total if done else event.current,
                             description=f"{event.kind} {event.digest[7:19]} {event.status}")


@click.group()
def image() -> None:
    """Manage the node's images: pull, list, remove and import archives.

    These are the embedded runtime's images. A node run with --container-runtime-endpoint uses its CRI runtime's
    images instead: manage those with the runtime's tools (e.g. `ctr -n k8s.io images`, `crictl`).
    """


@image.command()
@click.argument("ref")
@data_dir_option
@click.option("--private-registry", default=DEFAULT_REGISTRIES, show_default=True, type=click.Path(dir_okay=False),
              help="Registry mirrors, credentials and TLS, in k3s's registries.yaml format.")
@click.option("--creds", default="", metavar="USER[:PASSWORD]", help="Credentials for the image's registry.")
def pull(ref: str, data_dir: str, private_registry: str, creds: str) -> None:
    """Pull an image from its registry (or a configured mirror)."""
    async def run() -> Image:
        reference = parse_reference(ref)
        credentials = None
        if creds:
            username, _, password = creds.partition(":")
            credentials = {reference.registry: AuthConfig(username, password)}
        display = _RichProgress() if sys.stdout.isatty() else None
        async with ImageStore(store_root(data_dir), load_registries(private_registry)) as store:
            if display is None:
                return await store.pull(reference, credentials, _PlainProgress())
            with display.progress:
                return await store.pull(reference, credentials, display)

    pulled = _run(run(), data_dir, private_registry)
    click.echo(f"pulled {parse_reference(ref)}: image id {pulled.id}, {human_size(pulled.size)}")


@image.command(name="ls")
@data_dir_option
@click.option("--quiet", "-q", is_flag=True, help="Only image ids.")
def list_images(data_dir: str, quiet: bool) -> None:
    """List the images in the store."""
    async def run() -> list[Image]:
        async with ImageStore(store_root(data_dir)) as store:
            return await store.list()

    images = _run(run(), data_dir)
    if quiet:
        for found in images:
            click.echo(found.id)
        return
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for found in images:
        short_id, size = found.id.split(":", 1)[1][:12], human_size(found.size)
        for name in found.names:
            repository, _, tag = name.rpartition(":")
            rows.append((repository, tag, short_id, size))
        if not found.names:
            repository = found.digests[0].split("@", 1)[0] if found.digests else "<none>"
            rows.append((repository, "<none>", short_id, size))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@image.command(name="rm")
@click.argument("refs", nargs=-1, required=True)
@data_dir_option
def remove_images(refs: tuple[str, ...], data_dir: str) -> None:
    """Remove images by name or id (content no image uses is deleted)."""
    async def run() -> list[str]:
        problems = []
        async with ImageStore(store_root(data_dir)) as store:
            for ref in refs:
                try:
                    for name in await store.remove(ref):
                        click.echo(f"Deleted: {name}")
                except ImageNotFound as err:
                    problems.append(f"{err} (`kubelite image ls` lists the images)")
        return problems

    problems = _run(run(), data_dir)
    if problems:
        raise click.ClickException("\n".join(problems))


@image.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@data_dir_option
def import_images(files: tuple[str, ...], data_dir: str) -> None:
    """Load image archives (`docker save` or OCI layout, .tar or .tar.gz) without a registry."""
    async def run() -> list[Image]:
        loaded = []
        async with ImageStore(store_root(data_dir)) as store:
            for path in files:
                loaded += await store.import_archive(path)
        return loaded

    for found in _run(run(), data_dir):
        click.echo(f"imported {', '.join(found.names or found.digests) or '(no name)'}: image id {found.id}")
