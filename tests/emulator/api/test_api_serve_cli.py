"""`kvbench emulate serve` flags: vLLM spellings, one-line errors with exit 2, env passthrough."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kvbench.emulator.api.args import parse_serve_args
from kvbench.emulator.api.serve import main

MODEL = "Qwen/Qwen3-0.6B"

BAD_ARGV = [
    ([MODEL, "--bogus-flag"], "--bogus-flag"),
    ([], "model"),
    ([MODEL, "--kv-transfer-config", "{not json"], "--kv-transfer-config"),
    ([MODEL, "--kv-transfer-config=[1, 2]"], "--kv-transfer-config"),
    ([MODEL, "--kv-events-config", '{"endpoint": '], "--kv-events-config"),
    ([MODEL, "--block-size", "17"], "--block-size"),
    ([MODEL, "--max-num-seqs", "0"], "--max-num-seqs"),
    ([MODEL, "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    ([MODEL, "--port=http"], "--port"),
    ([MODEL, "--prefix-caching-hash-algo", "md5"], "--prefix-caching-hash-algo"),
    (["No/SuchModel"], "No/SuchModel"),
    ([MODEL, "--hardware", "TPU-v9"], "TPU-v9"),
    (
        [MODEL, "--kv-events-config", '{"enable_kv_cache_events": true, "publisher": "kafka"}'],
        "publisher",
    ),
    (
        [MODEL, "--kv-events-config", '{"enable_kv_cache_events": true, "endpiont": "x"}'],
        "endpiont",
    ),
    # optional `tokenizers` package missing, or no tokenizer.json: either way one line naming the flag
    (
        [
            MODEL,
            "--tokenizer",
            "/nonexistent-dir",
            "--port",
            "0",
            "--num-gpu-blocks-override",
            "64",
            "--max-model-len",
            "512",
        ],
        "--tokenizer",
    ),
]


@pytest.mark.parametrize("argv,named", BAD_ARGV)
def test_bad_flags_give_one_line_naming_the_flag_and_exit_2(argv, named, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err


def test_vllm_flag_spellings_and_env_passthrough():
    env = {
        "PYTHONHASHSEED": "7",
        "LMCACHE_CHUNK_SIZE": "256",
        "HOME": "/root",
        "VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES": "1",
    }
    options = parse_serve_args(
        [
            MODEL,
            "--max-num-seq=32",
            "--tensor-parallel-size",
            "2",
            "--block-size=32",
            "--kv-transfer-config",
            '{"kv_connector": "OffloadingConnector", "kv_role": "kv_both"}',
            "--served-model-name",
            "m",
            "--max-model-len",
            "4096",
            "--max-num-batched-tokens",
            "2048",
            "--num-gpu-blocks-override",
            "100",
            "--prefix-caching-hash-algo",
            "sha256_cbor",
            "--enable-prompt-tokens-details",
            "--hardware",
            "H200",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--stream-interval",
            "4",
        ],
        env,
    )
    a = options.engine_args
    assert (a.max_num_seqs, a.tensor_parallel_size, a.block_size, a.max_model_len) == (
        32,
        2,
        32,
        4096,
    )
    assert a.kv_transfer_config == {"kv_connector": "OffloadingConnector", "kv_role": "kv_both"}
    assert (a.served_model_name, a.max_num_batched_tokens, a.num_gpu_blocks_override) == (
        "m",
        2048,
        100,
    )
    assert (
        a.prefix_caching_hash_algo == "sha256_cbor"
        and a.enable_prompt_tokens_details
        and a.hardware == "H200"
    )
    assert a.env == {
        "PYTHONHASHSEED": "7",
        "LMCACHE_CHUNK_SIZE": "256",
        "VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES": "1",
    }
    assert (options.port, options.stream_interval) == (0, 4)


def test_serve_process_prints_ready_line_and_stops_on_sigint(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "kvbench.emulator.api.serve",
        MODEL,
        "--port",
        "0",
        "--num-gpu-blocks-override",
        "64",
        "--max-model-len",
        "512",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        line = proc.stdout.readline()
        assert "ready on http://127.0.0.1:" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_lists_the_vllm_flags_and_exits_zero(capsys):
    from kvbench.emulator.api.serve import main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: kvbench emulate serve")
    for flag in (
        "--kv-transfer-config",
        "--num-gpu-blocks-override",
        "--vllm-compat",
        "--hardware",
    ):
        assert flag in text
