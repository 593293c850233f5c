"""Build the tiny local Qwen3 model folder real vLLM needs for the parity run (no downloads).

Run with the vLLM venv (it has transformers + tokenizers):
    .venv-vllm/bin/python scripts/parity/make_tiny_model.py OUT_DIR

Writes config.json (Qwen3ForCausalLM, 2 layers, hidden 256, 4 heads, 2 KV heads, head_dim 64,
vocab 4096, bf16, tied embeddings: the `kvbench/tiny-qwen3` entry of the model catalog) and a
byte-level BPE tokenizer trained on generated text. No weights: serve with `--load-format dummy`.
Idempotent: an OUT_DIR that already holds config.json + tokenizer.json is left as is.
(scripts/make-tiny-model.py of the loadgen engineer does the same job; this copy keeps the parity
run independent of it.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VOCAB_SIZE = 4096
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus(num_lines: int = 4000) -> list[str]:
    words = ["cache", "block", "prefix", "token", "engine", "request", "offload", "router", "memory",
             "latency", "vector", "chunk", "hash", "event", "store", "evict", "queue", "model"]
    return [" ".join(words[(i * 7 + j * 3) % len(words)] + str((i + j) % 97) for j in range(12))
            for i in range(num_lines)]


def write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": 4096,
              "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def write_config(out: Path) -> None:
    from transformers import Qwen3Config

    eos_id = SPECIAL_TOKENS.index("<|im_end|>")
    config = Qwen3Config(vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
                         tie_word_embeddings=True, torch_dtype="bfloat16", bos_token_id=None,
                         eos_token_id=eos_id)
    config.architectures = ["Qwen3ForCausalLM"]
    config.save_pretrained(out)


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").exists():
        write_config(out)
    if not (out / "tokenizer.json").exists():
        write_tokenizer(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: make_tiny_model.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    print(build(Path(sys.argv[1])))
