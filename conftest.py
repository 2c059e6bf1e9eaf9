"""Fixtures every test directory may use: the local docker-registry ones (registered here, at the root, so pytest
imports tests.registry first and rewrites its asserts)."""

pytest_plugins = ["tests.registry"]
