"""How the agent takes a CRI endpoint, and what it says when nothing listens there."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubelite.kubelet.agent import cri_endpoint, socket_problem


@pytest.mark.parametrize(("given", "endpoint"), [
    ("unix:///run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
    ("/run/k3s/containerd/containerd.sock", "unix:///run/k3s/containerd/containerd.sock"),
])
def test_an_endpoint_is_a_unix_socket_url_or_path(given: str, endpoint: str) -> None:
    assert cri_endpoint(given) == endpoint


@pytest.mark.parametrize("given", ["tcp://127.0.0.1:10010", "containerd.sock", "unix://relative.sock", "npipe:////./x",
                                   ""])
def test_anything_but_a_unix_socket_is_refused_with_the_form_to_use(given: str) -> None:
    with pytest.raises(ValueError, match="unix:///path/to/runtime.sock"):
        cri_endpoint(given)


def test_socket_problem_names_a_missing_path_or_one_that_is_no_socket(tmp_path: Path) -> None:
    assert socket_problem(tmp_path / "missing.sock") == f"{tmp_path}/missing.sock does not exist"
    (tmp_path / "file").write_text("")
    assert socket_problem(tmp_path / "file") == f"{tmp_path}/file is not a socket"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "runtime.sock"))
        assert socket_problem(tmp_path / "runtime.sock") == ""
