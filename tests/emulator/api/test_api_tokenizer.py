"""The HF tokenizer folder and the streaming detokenizer."""

from __future__ import annotations

from emu_api_vllm_capture import TOKENIZER_DIR

from kvbench.emulator.api.tokenizer import HFTokenizer, IncrementalDecoder


def test_streamed_text_equals_the_full_decode_even_across_split_utf8():
    tokenizer = HFTokenizer(str(TOKENIZER_DIR))
    text = "naïve évaluation — 日本 ok"
    ids = tokenizer.encode(text, False)
    assert len(ids) > len(text.split())  # multi-byte characters span several byte-level tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push([t], final=i == len(ids) - 1) for i, t in enumerate(ids)]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert "" in pieces  # some ids held back until their character was complete
    assert not any("\ufffd" in p for p in pieces)


def test_vocab_bounds_and_special_tokens():
    tokenizer = HFTokenizer(str(TOKENIZER_DIR))
    assert tokenizer.vocab_size == 4096 and tokenizer.max_token_id >= 4095
    chat = tokenizer.render_chat([{"role": "user", "content": "hi"}], {})
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.encode(chat, False)[0] == 1  # <|im_start|> is one special token
