"""Pod volumes on the node: emptyDir (disk or tmpfs), hostPath with type checks, configMap, secret, downwardAPI and
projected files (service account tokens too) written atomically (so updates reach running pods whole), and claims
bound to local volumes. Secret, downwardAPI and projected files live on a tmpfs, as upstream's memory-backed
volumes do, so secrets and tokens never reach the disk."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubelite.api.quantity import HUGEPAGES_PREFIX, parse_quantity
from kubelite.client.errors import ApiError
from kubelite.kubelet.envvars import ConfigError, field_value, resource_value
from kubelite.kubelet.runtime.base import Mount, MountPropagation

Obj = dict[str, Any]
Files = dict[str, tuple[bytes, int]]
"""Relative path -> (content, mode)."""
Fetch = Callable[[str, str], Awaitable[Obj | None]]
"""(plural, name) -> object in the pod's namespace (persistentvolumes: cluster-wide), or None."""
Tokens = Callable[[Obj, str, int], Awaitable[str]]
"""(pod, audience, expirationSeconds) -> a token of the pod's ServiceAccount."""

DATA_LINK = "..data"
DEFAULT_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600
PLUGIN_DIRS = {"emptyDir": "kubernetes.io~empty-dir", "hostPath": "kubernetes.io~host-path",
               "configMap": "kubernetes.io~configmap", "secret": "kubernetes.io~secret",
               "downwardAPI": "kubernetes.io~downward-api", "projected": "kubernetes.io~projected",
               "persistentVolumeClaim": "kubernetes.io~local-volume", "ephemeral": "kubernetes.io~local-volume"}
MEMORY_KINDS = ("secret", "downwardAPI", "projected")
PROPAGATION = {"HostToContainer": MountPropagation.HOST_TO_CONTAINER,
               "Bidirectional": MountPropagation.BIDIRECTIONAL}


class MountError(ConfigError):
    """A volume cannot be set up (FailedMount): the pod waits in ContainerCreating and the kubelet retries."""


def _kind(volume: Obj) -> str:
    return next((k for k in PLUGIN_DIRS if k in volume), "")


def write_atomically(directory: Path, files: Files) -> bool:
    """Publish files (relative path -> (content, mode)) as one atomic swap of the ..data link, like the kubelet's
    AtomicWriter; False when the content was already there."""
    directory.mkdir(parents=True, exist_ok=True)
    current = directory / DATA_LINK
    if current.is_symlink():
        old = directory / os.readlink(current)
        existing = {str(p.relative_to(old)): p for p in old.rglob("*") if p.is_file()}
        if set(existing) == set(files) and all(existing[path].read_bytes() == content and
                                               stat.S_IMODE(existing[path].stat().st_mode) == mode
                                               for path, (content, mode) in files.items()):
            return False
    else:
        old = None
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for path, (content, mode) in files.items():
        target = stamp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    temp = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    temp.symlink_to(stamp.name)
    temp.rename(current)
    tops = {Path(path).parts[0] for path in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{top}")
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old is not None and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return True


def _items(data: dict[str, bytes], items: list[Obj] | None, default_mode: int, what: str) -> Files:
    """Key -> file, all keys or only the listed items (a missing listed key is an error unless optional)."""
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            raise MountError(f"configmap references non-existent config key: {item['key']}" if what == "configMap"
                             else f"references non-existent secret key: {item['key']}")
        files[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
    return files


async def _source_files(source_kind: str, source: Obj, fetch: Fetch, default_mode: int) -> Files:
    """Files of a configMap or secret source; {} when it is optional and missing."""
    plural = "configmaps" if source_kind == "configMap" else "secrets"
    name = source.get("name") if source_kind == "configMap" else source.get("secretName", source.get("name"))
    obj = await fetch(plural, name or "")
    if obj is None:
        if source.get("optional"):
            return {}
        raise MountError(f'{"configmap" if plural == "configmaps" else "secret"} "{name}" not found')
    if plural == "configmaps":
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    else:
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    return _items(data, source.get("items"), source.get("defaultMode", default_mode), source_kind)


def _downward_files(pod: Obj, items: list[Obj], default_mode: int, allocatable: dict[str, str]) -> Files:
    """downwardAPI items as files."""
    files = {}
    for item in items:
        if "fieldRef" in item:
            value = field_value(pod, item["fieldRef"]["fieldPath"])
        else:
            value = resource_value(pod, item["resourceFieldRef"], "", allocatable)
        files[item["path"]] = (value.encode(), item.get("mode", default_mode))
    return files


def _check_host_path(path: Path, type_: str) -> None:
    """hostPath's type check, creating the directory or file for the *OrCreate types."""
    if type_ == "DirectoryOrCreate" and not path.exists():
        path.mkdir(mode=0o755, parents=True)
    elif type_ == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644)
    checks = {"Directory": stat.S_ISDIR, "DirectoryOrCreate": stat.S_ISDIR, "File": stat.S_ISREG,
              "FileOrCreate": stat.S_ISREG, "Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR,
              "BlockDevice": stat.S_ISBLK}
    if type_ in checks:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise MountError(f"hostPath type check failed: {path} does not exist") from None
        if not checks[type_](mode):
            noun = {"Directory": "a directory", "DirectoryOrCreate": "a directory", "File": "a file",
                    "FileOrCreate": "a file", "Socket": "a socket file", "CharDevice": "a character device",
                    "BlockDevice": "a block device"}[type_]
            raise MountError(f"hostPath type check failed: {path} is not {noun}")


def _mount_memory(path: Path, fstype: str, options: str) -> None:
    """A memory-backed emptyDir: tmpfs, or hugetlbfs for huge pages; mounted once."""
    if os.path.ismount(path):
        return
    result = subprocess.run(["mount", "-t", fstype, "-o", options, fstype, str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise MountError(f"mounting {fstype} for emptyDir {path} failed: {result.stderr.strip()}")


def huge_page_size(pod: Obj, medium: str) -> str:
    """The page size of a HugePages emptyDir: its medium's (HugePages-2Mi), else the only one the pod's containers
    ask for; MountError when the pod asks for none (or, for plain HugePages, for several)."""
    spec = pod.get("spec") or {}
    asked = {name.removeprefix(HUGEPAGES_PREFIX)
             for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
             for kind in ("requests", "limits") for name in ((container.get("resources") or {}).get(kind) or {})
             if name.startswith(HUGEPAGES_PREFIX)}
    size = medium.removeprefix("HugePages").removeprefix("-")
    if not asked or (size and size not in asked):
        raise MountError("hugePages storage requested, but there is no resource request for huge pages")
    if not size and len(asked) > 1:
        raise MountError(f"multiple page sizes requested ({', '.join(sorted(asked))}): use medium HugePages-<size>")
    return size or asked.pop()


def _chown_group(path: Path, gid: int) -> None:
    """fsGroup: the volume's files belong to the group, directories setgid, group-writable where owner-writable."""
    for entry in [path, *path.rglob("*")]:
        if entry.is_symlink():
            continue
        os.chown(entry, -1, gid)
        mode = entry.stat().st_mode
        extra = stat.S_ISGID if entry.is_dir() else 0
        os.chmod(entry, stat.S_IMODE(mode) | extra | (stat.S_IRGRP | (stat.S_IWGRP if mode & stat.S_IWUSR else 0)))


class VolumeManager:
    """Lays out each pod's volumes under ROOT/<uid>/volumes/<plugin>/<name> (MEMORY_ROOT for MEMORY_KINDS, a
    tmpfs) and answers the container mounts."""

    def __init__(self, root: Path, memory_root: Path, tokens: Tokens | None = None):
        self.root = root
        self.memory_root = memory_root
        self.tokens = tokens

    def pod_dir(self, uid: str) -> Path:
        return self.root / uid

    async def setup(self, pod: Obj, fetch: Fetch, allocatable: dict[str, str]) -> dict[str, Path]:
        """Make or refresh every volume of the pod; volume name -> host path. Raises MountError to retry later."""
        spec, uid = pod.get("spec") or {}, pod["metadata"]["uid"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        paths: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            kind = _kind(volume)
            if not kind:
                raise MountError(f"volume {volume.get('name')!r}: this kubelet cannot mount {sorted(volume)}")
            source = volume[kind] or {}
            base = self.memory_root if kind in MEMORY_KINDS else self.root
            path = base / uid / "volumes" / PLUGIN_DIRS[kind] / volume["name"]
            if kind == "hostPath":
                path = Path(source["path"])
                await asyncio.to_thread(_check_host_path, path, source.get("type", ""))
            elif kind == "persistentVolumeClaim":
                path = await self._claim_path(source.get("claimName") or "", fetch)
            elif kind == "ephemeral":
                path = await self._claim_path(f"{pod['metadata']['name']}-{volume['name']}", fetch, pod)
            elif kind == "emptyDir":
                await asyncio.to_thread(path.mkdir, 0o777, True, True)
                path.chmod(0o777)
                medium, size = source.get("medium") or "", source.get("sizeLimit")
                if medium == "Memory":
                    options = "mode=0777" + (f",size={int(parse_quantity(size) or 0)}" if size else "")
                    await asyncio.to_thread(_mount_memory, path, "tmpfs", options)
                elif medium.startswith("HugePages"):
                    options = f"mode=0777,pagesize={huge_page_size(pod, medium)}"
                    await asyncio.to_thread(_mount_memory, path, "hugetlbfs", options)
            else:
                files = await self._files(kind, source, pod, fetch, allocatable)
                await asyncio.to_thread(write_atomically, path, files)
            if fs_group is not None and kind in ("emptyDir", "configMap", "secret", "downwardAPI", "projected"):
                await asyncio.to_thread(_chown_group, path, int(fs_group))
            paths[volume["name"]] = path
        return paths

    async def _files(self, kind: str, source: Obj, pod: Obj, fetch: Fetch,
                     allocatable: dict[str, str]) -> Files:
        default_mode = source.get("defaultMode", DEFAULT_MODE)
        if kind in ("configMap", "secret"):
            return await _source_files(kind, source, fetch, default_mode)
        if kind == "downwardAPI":
            return _downward_files(pod, source.get("items") or [], default_mode, allocatable)
        files: Files = {}
        for projection in source.get("sources") or []:
            if "configMap" in projection or "secret" in projection:
                sub = "configMap" if "configMap" in projection else "secret"
                inner = {**projection[sub], "defaultMode": default_mode}
                if sub == "secret":
                    inner["secretName"] = inner.get("name")
                files.update(await _source_files(sub, inner, fetch, default_mode))
            elif "downwardAPI" in projection:
                files.update(_downward_files(pod, projection["downwardAPI"].get("items") or [], default_mode,
                                             allocatable))
            elif "serviceAccountToken" in projection:
                files.update(await self._token_file(pod, projection["serviceAccountToken"] or {}, default_mode))
            else:
                raise MountError(f"projected source {sorted(projection)} is not supported by this kubelet yet")
        return files

    async def _token_file(self, pod: Obj, source: Obj, mode: int) -> Files:
        """A serviceAccountToken projection: the token at its path (default "token")."""
        if self.tokens is None:
            raise MountError("this kubelet cannot request service account tokens")
        try:
            token = await self.tokens(pod, source.get("audience") or "",
                                      int(source.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS))
        except ApiError as exc:
            raise MountError(f"failed to fetch token: {exc}") from exc
        return {source.get("path") or "token": (token.encode(), mode)}

    @staticmethod
    async def _claim_path(name: str, fetch: Fetch, owner: Obj | None = None) -> Path:
        """A claim bound to a local or hostPath PersistentVolume: that directory. With owner (an ephemeral volume's
        pod), the claim must be the one made for that pod."""
        claim = await fetch("persistentvolumeclaims", name)
        if claim is None:
            raise MountError(f'persistentvolumeclaim "{name}" not found')
        if owner is not None and not any(ref.get("controller") and ref.get("uid") == owner["metadata"]["uid"]
                                         for ref in claim["metadata"].get("ownerReferences") or []):
            meta = owner["metadata"]
            raise MountError(f"PVC {meta['namespace']}/{name} was not created for pod {meta['namespace']}/"
                             f"{meta['name']} (pod is not owner)")
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name or (claim.get("status") or {}).get("phase") != "Bound":
            raise MountError(f'persistentvolumeclaim "{name}" is not bound')
        volume = await fetch("persistentvolumes", volume_name)
        spec = (volume or {}).get("spec") or {}
        local = spec.get("local") or spec.get("hostPath")
        if not local:
            raise MountError(f'persistentvolume "{volume_name}" is neither local nor hostPath')
        path = Path(local["path"])
        if not await asyncio.to_thread(path.is_dir):
            if "hostPath" in spec and spec["hostPath"].get("type") in (None, "", "DirectoryOrCreate"):
                await asyncio.to_thread(path.mkdir, 0o777, True, True)
            else:
                raise MountError(f'persistentvolume "{volume_name}": {path} is not a directory')
        return path

    @staticmethod
    def mounts(container: Obj, paths: dict[str, Path], readonly_kinds: set[str]) -> list[Mount]:
        """The container's volumeMounts as runtime bind mounts (subPath inside the volume; secrets and configMaps
        read-only as upstream mounts them)."""
        mounts = []
        for vm in container.get("volumeMounts") or []:
            source = paths.get(vm["name"])
            if source is None:
                raise MountError(f"volumeMount {vm['name']!r} names no volume of the pod")
            if vm.get("subPath"):
                source = source / vm["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(Mount(str(source), vm["mountPath"],
                                readonly=bool(vm.get("readOnly")) or vm["name"] in readonly_kinds,
                                propagation=PROPAGATION.get(vm.get("mountPropagation", ""),
                                                            MountPropagation.PRIVATE)))
        return mounts

    async def teardown(self, uid: str) -> None:
        """Unmount the pod's tmpfs volumes and remove its directories (hostPath and claims are left alone)."""
        directory = self.pod_dir(uid)

        def remove() -> None:
            empty = directory / "volumes" / PLUGIN_DIRS["emptyDir"]
            if empty.is_dir():
                for volume in empty.iterdir():
                    if os.path.ismount(volume):
                        subprocess.run(["umount", "-l", str(volume)], capture_output=True)
            shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(self.memory_root / uid, ignore_errors=True)

        await asyncio.to_thread(remove)
