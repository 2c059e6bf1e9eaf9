"""How the kubelet turns a pod's seccompProfile into the runtime's, and how a Localhost profile file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelite.kubelet.containers import sandbox_config, security_context
from kubelite.kubelet.envvars import ConfigError
from kubelite.kubelet.runtime.base import SecurityProfile
from kubelite.kubelet.runtime.seccomp import SeccompError, read_profile

SECCOMP_DIR = Path("/var/lib/kubelite/agent/seccomp")


def profile_of(pod_profile: dict | None, container_profile: dict | None) -> SecurityProfile:
    pod = {"spec": {"securityContext": {"seccompProfile": pod_profile} if pod_profile else {}}}
    container = {"name": "c", "securityContext": {"seccompProfile": container_profile} if container_profile else {}}
    return security_context(pod, container, SECCOMP_DIR).seccomp


def test_container_profile_over_the_pods() -> None:
    assert profile_of(None, None) == SecurityProfile("Unconfined")
    assert profile_of({"type": "RuntimeDefault"}, None) == SecurityProfile("RuntimeDefault")
    assert profile_of({"type": "RuntimeDefault"}, {"type": "Unconfined"}) == SecurityProfile("Unconfined")
    assert profile_of(None, {"type": "Localhost", "localhostProfile": "profiles/audit.json"}) == SecurityProfile(
        "Localhost", str(SECCOMP_DIR / "profiles/audit.json"))


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../escape.json", "a/../../b.json"])
def test_localhost_profile_stays_inside_the_seccomp_dir(path: str) -> None:
    with pytest.raises(ConfigError, match="must be a relative path"):
        profile_of(None, {"type": "Localhost", "localhostProfile": path})


def test_unreadable_profiles_are_named(tmp_path: Path) -> None:
    with pytest.raises(SeccompError, match="cannot load seccomp profile .*No such file"):
        read_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SeccompError, match="cannot load seccomp profile"):
        read_profile(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(SeccompError, match="has no defaultAction"):
        read_profile(tmp_path / "empty.json")
    (tmp_path / "ok.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert read_profile(tmp_path / "ok.json") == {"defaultAction": "SCMP_ACT_ALLOW"}


def test_sandbox_is_privileged_when_a_container_is() -> None:
    def pod(**init_context: object) -> dict[str, object]:
        return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                "spec": {"initContainers": [{"name": "setup", "securityContext": init_context}],
                         "containers": [{"name": "app"}]}}

    assert sandbox_config(pod(privileged=True), None).privileged
    assert not sandbox_config(pod(privileged=False), None).privileged
    assert not sandbox_config(pod(), None).privileged
