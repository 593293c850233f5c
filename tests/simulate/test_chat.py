"""`load.api: chat` on the simulated target: the chat body the live client sends (system prompt,
user questions, the streamed answer text as assistant turns), rendered and tokenized by the emulated
server's own chat path. Per turn, prompt tokens and cached tokens equal the live emulated stack's
(one engine, synchronous, no eviction: the live cache hits do not depend on timing)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kvbench.cli import main
from kvbench.emulator.api.tokenizer import BuiltinTokenizer
from kvbench.simulate.front import PromptFront

SYSTEM = "You are a careful assistant who answers questions about caches. " * 40
QUESTIONS = [
    ["What does a prefix cache store?", "Why does eviction order matter?", "Summarise."],
    ["How large is one KV block?", "What is offloading?"],
    ["Which tier is fastest?", "And the slowest?", "Thanks, one more: why?"],
]


def write_spec(tmp_path: Path) -> Path:
    lines = [
        {
            "conversation_id": f"c{i}",
            "prefix_text": SYSTEM,
            "turns": [{"prompt": q, "output_tokens": 12} for q in questions],
        }
        for i, questions in enumerate(QUESTIONS)
    ]
    replay = tmp_path / "chat.jsonl"
    replay.write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec = {
        "name": "sim-chat",
        "seed": 2,
        "models": ["Qwen/Qwen3-8B"],
        "scenarios": ["no-offload"],
        "target": {
            "kind": "emulated",
            "hardware": "L40S",
            "engines": 1,
            "num_gpu_blocks_override": 1024,
            "max_model_len": 4096,
        },
        "workload": {"kind": "replay", "path": str(replay)},
        "load": {"strategy": "synchronous", "requests_per_level": 8, "api": "chat"},
        "cache": {"reset": True, "prime": False, "verify": False},
        "collect": {"interval_s": 1},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def requests_of(run: Path) -> pd.DataFrame:
    (cell,) = json.loads((run / "manifest.json").read_text())["cells"]
    assert cell["status"] == "ok", cell
    rows = pd.read_parquet(run / "cells" / cell["cell_id"] / "requests.parquet")
    return rows.sort_values(["conversation_id", "turn_index"]).reset_index(drop=True)


def test_the_front_renders_chat_as_the_emulated_server_does():
    tokenizer = BuiltinTokenizer()
    front = PromptFront(tokenizer, max_model_len=4096, max_token_id=tokenizer.max_token_id)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    served = front.chat(messages, 16)
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    assert served.token_ids == tokenizer.encode(text + "<|im_start|>assistant\n")
    assert served.max_tokens == 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    spec = write_spec(tmp)
    out = {}
    for kind in ("emulated", "simulated"):
        out[kind] = tmp / kind
        assert main(["run", str(spec), "--target", kind, "--out", str(out[kind])]) == 0
    return requests_of(out["emulated"]), requests_of(out["simulated"])


def test_chat_turns_have_the_live_prompt_and_cached_tokens(runs):
    live, sim = runs
    keys = ["conversation_id", "turn_index", "prompt_tokens", "cached_tokens", "output_tokens"]
    assert len(live) == 8 and (live.status == "ok").all() and (sim.status == "ok").all()
    assert sim[keys].to_dict("records") == live[keys].to_dict("records")
    # the shared system prompt hits from the second conversation on; later turns hit their history
    assert (sim.cached_tokens > 0).sum() >= 6
    later = sim[sim.turn_index > 0]
    assert (later.prompt_tokens > sim.prompt_tokens.max() // 4).all()
