"""Shared fixtures: real Redis / Valkey servers on free loopback ports, stopped by pid."""

from __future__ import annotations

import pytest

from kvbench.emulator.stores import KVStoreServer


@pytest.fixture
def redis_server():
    with KVStoreServer("redis") as server:
        yield server


@pytest.fixture
def valkey_server():
    with KVStoreServer("valkey") as server:
        yield server


@pytest.fixture(params=["redis", "valkey"])
def kv_store_server(request):
    """Run a test once against real Redis and once against real Valkey."""
    with KVStoreServer(request.param) as server:
        yield server
