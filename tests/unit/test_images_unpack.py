"""Layer unpacking: metadata kept, OCI whiteouts turned into overlayfs whiteouts, nothing written outside the layer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kubelite.kubelet.images.errors import UnpackError
from kubelite.kubelet.images.unpack import unpack_layer
from tests.images import MTIME, Entry, directory, file, hardlink, layer, opaque, symlink, whiteout


def unpack(tmp_path: Path, entries: list[Entry], compress: bool = True, check_diff_id: bool = True) -> Path:
    """Build a layer of the entries and unpack it into tmp_path/layer."""
    built = layer(entries, compress=compress)
    blob = tmp_path / "blob"
    blob.write_bytes(built.blob)
    dest = tmp_path / "layer"
    unpack_layer(blob, dest, built.diff_id if check_diff_id else None)
    return dest


@pytest.mark.parametrize("compress", [True, False])
def test_files_keep_modes_owners_links_and_times(tmp_path: Path, compress: bool) -> None:
    root = unpack(tmp_path, [
        directory("usr", 0o755),
        directory("usr/private", 0o700, uid=1000, gid=2000),
        file("usr/private/data", "secret", 0o640, uid=1000, gid=2000),
        file("usr/bin/suid", b"\x7fELF", 0o4755),
        symlink("usr/bin/sh", "busybox"),
        symlink("abs", "/usr/private"),
        hardlink("usr/bin/again", "usr/bin/suid"),
        Entry("run/fifo", "fifo", mode=0o600),
        Entry("dev/null", "chardev", mode=0o666),
        file("xattr", "x", xattrs={"user.kubelite": b"\x00\xffbinary"}),
        file("./dotted/../plain", "normalized"),
    ], compress=compress)
    private = root / "usr/private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert (private.stat().st_uid, private.stat().st_gid) == (1000, 2000)
    data = private / "data"
    assert data.read_text() == "secret" and stat.S_IMODE(data.stat().st_mode) == 0o640
    assert (data.stat().st_uid, data.stat().st_gid) == (1000, 2000)
    assert data.stat().st_mtime == MTIME and private.stat().st_mtime == MTIME
    suid = root / "usr/bin/suid"
    assert stat.S_IMODE(suid.stat().st_mode) == 0o4755, "set-uid survives the chown"
    assert os.readlink(root / "usr/bin/sh") == "busybox"
    assert os.readlink(root / "abs") == "/usr/private", "symlink targets are stored as written"
    assert (root / "usr/bin/again").stat().st_ino == suid.stat().st_ino
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    assert stat.S_ISCHR((root / "dev/null").lstat().st_mode)
    assert os.getxattr(root / "xattr", "user.kubelite") == b"\x00\xffbinary"
    assert (root / "plain").read_text() == "normalized"
    assert stat.S_IMODE((root / "usr/bin").stat().st_mode) == 0o755, "implied parent directories are 0755"


def test_whiteouts_become_overlayfs_whiteouts(tmp_path: Path) -> None:
    root = unpack(tmp_path, [
        directory("etc"),
        whiteout("etc/removed"),
        directory("data/dir"),
        opaque("data/dir"),
        file("data/dir/kept", "new"),
        whiteout("toplevel"),
        file("etc/.wh..wh.plnk", "aufs metadata"),
    ])
    removed = root / "etc/removed"
    info = removed.lstat()
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0), "a 0/0 character device"
    assert not (root / "etc/.wh.removed").exists()
    assert stat.S_ISCHR((root / "toplevel").lstat().st_mode)
    assert os.getxattr(root / "data/dir", "trusted.overlay.opaque") == b"y"
    assert not (root / "data/dir/.wh..wh..opq").exists()
    assert (root / "data/dir/kept").read_text() == "new"
    assert not os.path.lexists(root / "etc/.wh..wh.plnk") and not os.path.lexists(root / "etc/plnk")


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    root = unpack(tmp_path, [
        file("a", "first"), hardlink("b", "a"), file("a", "second"),
        file("d/inner", "x"), file("d", "now a file"),
    ])
    assert (root / "a").read_text() == "second"
    assert (root / "b").read_text() == "first", "rewriting a path does not write through its old hardlinks"
    assert (root / "d").read_text() == "now a file"


@pytest.mark.parametrize("entries", [
    [file("../escaped", "x")],
    [file("a/../../escaped", "x")],
    [file("inside", "x"), hardlink("link", "../../escaped")],
])
def test_paths_escaping_the_layer_are_refused(tmp_path: Path, entries: list[Entry]) -> None:
    (tmp_path / "work").mkdir()
    with pytest.raises(UnpackError, match="outside the layer"):
        unpack(tmp_path / "work", entries, check_diff_id=False)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "work" / "escaped").exists()


def test_symlinks_resolve_inside_the_layer(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = unpack(tmp_path, [
        symlink("root-link", "/"),
        file("root-link/via-absolute", "a"),
        symlink("up", f"../../../..{outside}"),
        file("up/via-relative", "b"),
        file("/absolute-name", "c"),
    ])
    assert (root / "via-absolute").read_text() == "a"
    assert (root / outside.relative_to("/") / "via-relative").read_text() == "b"
    assert not (outside / "via-relative").exists()
    assert (root / "absolute-name").read_text() == "c"


def test_diff_id_is_checked(tmp_path: Path) -> None:
    built = layer([file("a", "x")])
    blob = tmp_path / "blob"
    blob.write_bytes(built.blob)
    with pytest.raises(UnpackError, match="diff_id|image config says"):
        unpack_layer(blob, tmp_path / "layer", "sha256:" + "0" * 64)


def test_corrupt_layers_are_refused(tmp_path: Path) -> None:
    built = layer([file("a", "x" * 10000)])
    blob = tmp_path / "blob"
    blob.write_bytes(built.blob[: len(built.blob) // 2])
    with pytest.raises(UnpackError, match="not a valid tar"):
        unpack_layer(blob, tmp_path / "layer")
