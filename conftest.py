"""Fixtures every test directory may use: the local docker-registry ones and containerd's (registered here, at the
root, so pytest imports tests.registry and tests.containerd first and rewrites their asserts)."""

pytest_plugins = ["tests.registry", "tests.containerd"]
