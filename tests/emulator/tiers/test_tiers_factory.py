"""build_connector: which connector a --kv-transfer-config builds, and its one-line errors."""

import pytest
from tier_fakes import facts

from kvbench.emulator.engine.interface import EngineArgs
from kvbench.emulator.tiers.factory import build_connector, kv_offloading_backend_config
from kvbench.emulator.tiers.lmcache import LMCacheConnector
from kvbench.emulator.tiers.native import OffloadingConnector
from kvbench.errors import UserError


def args(config, env=None):
    return EngineArgs(
        model="Qwen/Qwen3-8B", kv_transfer_config=config, env=env or {"PYTHONHASHSEED": "0"}
    )


def test_builds_each_connector():
    native = build_connector(
        args(
            {
                "kv_connector": "OffloadingConnector",
                "kv_role": "kv_both",
                "kv_connector_extra_config": {"num_cpu_blocks": 10},
            }
        ),
        facts(),
    )
    assert isinstance(native, OffloadingConnector) and native.config.num_cpu_blocks == 10
    lm = build_connector(
        args(
            {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"},
            env={"PYTHONHASHSEED": "0", "LMCACHE_CHUNK_SIZE": "64"},
        ),
        facts(),
    )
    assert isinstance(lm, LMCacheConnector) and lm.config.chunk_size == 64
    assert lm.num_layers == 36  # Qwen3-8B, from the model catalog


@pytest.mark.parametrize(
    "config, message",
    [
        ({"kv_connector": "NixlConnector", "kv_role": "kv_both"}, "kv_connector"),
        ({"kv_connector": "OffloadingConnector"}, "kv_role"),
        (
            {
                "kv_connector": "OffloadingConnector",
                "kv_role": "kv_both",
                "kv_connector_extra_config": [],
            },
            "kv_connector_extra_config",
        ),
    ],
)
def test_errors_name_the_field(config, message):
    with pytest.raises(UserError, match=message):
        build_connector(args(config), facts())


def test_kv_offloading_backend_translation():
    lm = kv_offloading_backend_config("lmcache", 10.0, tensor_parallel_size=2)
    assert lm["kv_connector_extra_config"] == {
        "lmcache.local_cpu": True,
        "lmcache.max_local_cpu_size": 5.0,
    }
    native = kv_offloading_backend_config("native", 2.0, tensor_parallel_size=2)
    assert native["kv_connector_extra_config"] == {"cpu_bytes_to_use": 2 * 1024**3}
    with pytest.raises(UserError, match="--kv-offloading-backend"):
        kv_offloading_backend_config("disk", 1.0, 1)
