import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiment"))
from kv_endpoint import KvEndpoint  # noqa: E402

from kvbench.spec.experiment import EndpointTarget as EndpointSpec  # noqa: E402
from kvbench.targets import TargetError, build_target  # noqa: E402
from kvbench.targets.base import ComponentReset


def target(url, **over):
    return build_target(EndpointSpec(kind="endpoint", url=url, **over), run_dir=Path("/tmp"))


def test_up_finds_model_max_len_and_metrics_sources():
    with KvEndpoint(model="served-x", max_model_len=512) as server:
        t = target(server.url + "/", metrics_urls=[server.url + "/metrics"])
        dep = t.up("Qwen/Qwen3-0.6B", "no-offload", {})
        assert dep.served_model_name == "served-x" and dep.base_url == server.url
        assert dep.facts.max_model_len == 512
        assert dep.metrics_sources == {"metrics-0": server.url + "/metrics"}
        assert t.describe().kind == "endpoint" and t.describe().emulated is False


def test_wrong_model_name_is_a_target_error():
    with (
        KvEndpoint(model="a") as server,
        pytest.raises(TargetError, match="target.model_name 'b' is not served"),
    ):
        target(server.url, model_name="b").up("m", "s", {})


def test_unreachable_endpoint_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TargetError, match="unreachable"):
        target(f"http://127.0.0.1:{port}").up("m", "s", {})


def test_reset_caches_reports_success_and_404():
    with KvEndpoint() as ok_server, KvEndpoint(reset_supported=False) as no_reset:
        t = target(ok_server.url)
        dep = t.up("m", "s", {})
        ok_server.cache.add((1,))
        assert t.reset_caches(dep).components == {
            ok_server.url: ComponentReset(
                reset=True, what="POST /reset_prefix_cache", http_status=200
            )
        }
        assert ok_server.cache == set()
        t2 = target(no_reset.url)
        result = t2.reset_caches(t2.up("m", "s", {})).components[no_reset.url]
        assert result.reset is False and result.http_status == 404
        assert result.note is not None and "not offered" in result.note
