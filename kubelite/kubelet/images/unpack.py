"""Unpack a layer tar into its own directory for overlayfs: OCI whiteouts become overlay whiteouts, nothing escapes."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from typing import BinaryIO

from kubelite.kubelet.images.errors import UnpackError

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
XATTR_PAX_PREFIX = "SCHILY.xattr."
MAX_SYMLINK_HOPS = 40
COPY_BUFFER = 1 << 20


class _HashingReader:
    """A read-only stream that hashes what passes through it (the layer's uncompressed bytes, for its diff_id)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        """Read to the end (tar padding after the end-of-archive blocks counts too) and return the digest."""
        while self.read(COPY_BUFFER):
            pass
        return f"sha256:{self.hash.hexdigest()}"


def unpack_layer(blob: str | os.PathLike[str], dest: str | os.PathLike[str], diff_id: str | None = None) -> None:
    """Unpack a gzip or plain layer tar into the new directory `dest`; with diff_id, check the uncompressed digest."""
    os.mkdir(dest, 0o755)
    with open(blob, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw  # type: ignore[assignment]
        reader = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                _Extractor(os.fspath(dest)).run(tar)
            digest = reader.drain()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise UnpackError(f"layer {os.fspath(blob)} is not a valid tar: {err}") from err
    if diff_id and digest != diff_id:
        raise UnpackError(f"layer content has digest {digest}, but the image config says {diff_id}")


def _clean(name: str) -> list[str]:
    """A member name as path components under the layer root; `..` may not climb above it."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnpackError(f"layer entry {name!r} points outside the layer")
            parts.pop()
        else:
            parts.append(part)
    return parts


def _remove(path: str) -> None:
    """Remove whatever is at path (file, link, device or directory tree), if anything."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _Extractor:
    """Writes tar members under one root, resolving symlinks inside that root only (as containerd's RootPath)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def run(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.extract(tar, member)
        for path, member in reversed(self.dirs):
            self.metadata(path, member)

    def resolve_dir(self, parts: list[str]) -> str:
        """The directory at parts, following symlinks without leaving the root; missing directories are created."""
        pending = list(parts)
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.root, *resolved, part)
            try:
                mode = os.lstat(candidate).st_mode
            except FileNotFoundError:
                os.mkdir(candidate)
                os.chmod(candidate, 0o755)
                resolved.append(part)
                continue
            if stat.S_ISLNK(mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnpackError(f"too many symlinks under {'/'.join(parts)!r}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            if not stat.S_ISDIR(mode):
                raise UnpackError(f"layer entry under {'/'.join(parts)!r}: {part!r} is not a directory")
            resolved.append(part)
        return os.path.join(self.root, *resolved)

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Write one member, replacing whatever its path held; directories get their metadata at the end."""
        parts = _clean(member.name)
        if not parts:
            if member.isdir():
                self.dirs.append((self.root, member))
            return
        parent = self.resolve_dir(parts[:-1])
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base, member)
            return
        path = os.path.join(parent, base)
        if member.isdir():
            if not os.path.isdir(path) or os.path.islink(path):
                _remove(path)
                os.mkdir(path, 0o700)
            self.dirs.append((path, member))
            return
        _remove(path)
        if member.isreg():
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "wb") as out:
                shutil.copyfileobj(source, out, COPY_BUFFER)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            os.link(self.link_target(member.linkname), path, follow_symlinks=False)
            return
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            log.debug("skipping layer entry %s of tar type %r", member.name, member.type)
            return
        self.metadata(path, member)

    def whiteout(self, parent: str, base: str, member: tarfile.TarInfo) -> None:
        """`.wh..wh..opq` makes the directory opaque; `.wh.NAME` becomes a 0/0 character device NAME."""
        if base == OPAQUE_WHITEOUT:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return
        path = os.path.join(parent, base[len(WHITEOUT_PREFIX):])
        _remove(path)
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        os.lchown(path, member.uid, member.gid)

    def link_target(self, linkname: str) -> str:
        """The existing file a hardlink names, inside this layer."""
        parts = _clean(linkname)
        if not parts:
            raise UnpackError(f"hardlink to {linkname!r} names the layer root")
        target = os.path.join(self.resolve_dir(parts[:-1]), parts[-1])
        if not os.path.lexists(target):
            raise UnpackError(f"hardlink target {linkname!r} is not in the layer")
        return target

    def metadata(self, path: str, member: tarfile.TarInfo) -> None:
        """Owner, then mode (chown clears set-id bits), then extended attributes, then times."""
        os.lchown(path, member.uid, member.gid)
        if not member.issym():
            os.chmod(path, stat.S_IMODE(member.mode))
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PAX_PREFIX):
                name = key[len(XATTR_PAX_PREFIX):]
                try:
                    os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
                except OSError as err:
                    log.debug("cannot set xattr %s on %s: %s", name, path, err)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
