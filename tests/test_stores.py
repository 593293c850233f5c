import redis

from kvbench.emulator.stores import KVStoreServer


def test_store_server_is_real_and_stops_by_pid(kv_store_server):
    client = redis.Redis.from_url(kv_store_server.redis_url)
    client.set("k", b"v")
    assert client.get("k") == b"v"
    info = client.info("server")
    if kv_store_server.kind == "valkey":
        assert info["server_name"] == "valkey"
    else:
        assert "server_name" not in info and info["redis_version"].startswith("7")
    assert client.config_get("save")["save"] == ""  # no persistence


def test_store_stop_leaves_no_process():
    server = KVStoreServer("valkey").start()
    process = server.process
    server.stop()
    assert process.poll() is not None
