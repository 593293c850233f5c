"""The request sequence of the parity run, and a driver that plays it against one server.

Prompts are symbolic: a list of ints (prompt token ids, shared by both peers) and `Gen(req, k)`
references ("the k-th token request `req` generated on *this* server"). Real vLLM with dummy
weights and the emulator generate different tokens, so a multi-turn prompt that carries a previous
answer is resolved per server from that server's own `return_token_ids`. The comparison
(parity_compare.py) maps every block hash back to its symbolic tokens, so blocks holding generated tokens
still compare structurally; blocks of prompt tokens only must match bit for bit.

Sequential phases (one request in flight at a time; the next is sent after the previous answered
and its KV events went quiet), for block_size 32 and 23 usable blocks:
- prefix: shared-prefix hits, an exact repeat, a block-aligned prompt that is fully cached (vLLM
  recomputes its last block and stores that hash a second time);
- decode: a 60-token prompt with max_tokens 8 completes block 1 with generated tokens during
  decode; the next turn carries that answer and hits it;
- eviction: unrelated 330/400-token prompts evict cached blocks (LRU, chain tails first), with
  repeats of earlier prompts in between to observe which blocks survived.
Sequential requests can neither preempt nor fail an allocation here (one request needs at most
16 of the 23 usable blocks), so an optional concurrent phase follows (not exactly reproducible: step
timing decides the interleaving): two long decodes whose KV cannot both fit (a preemption), and a
request that must wait for blocks (how often its prefix-cache query is counted).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from parity_events import EventCollector
from parity_servers import SERVED_MODEL, Server


@dataclass(frozen=True)
class Gen:
    request: str
    index: int


Token = int | Gen


@dataclass(frozen=True)
class Step:
    name: str
    prompt: tuple[Token, ...]
    max_tokens: int
    phase: str
    note: str = ""


def _unique_tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


def gen_refs(request: str, n: int) -> list[Gen]:
    return [Gen(request, k) for k in range(n)]


def build_sequence(seed: int = 7) -> list[Step]:
    rng = random.Random(seed)
    system, q0, q1, tail16 = (_unique_tokens(rng, n) for n in (200, 40, 40, 16))
    chat, chat_next = _unique_tokens(rng, 60), _unique_tokens(rng, 30)
    fillers = [_unique_tokens(rng, n) for n in (330, 330, 330, 400)]
    a, b, a16 = system + q0, system + q1, system + q0 + tail16
    turn2 = chat + gen_refs("r05", 8) + chat_next
    s = [
        Step("r00", a, 1, "prefix", "miss: 240 tok, stores 7 blocks"),
        Step("r01", b, 1, "prefix", "same 200-tok prefix: hits 6 blocks"),
        Step("r02", a, 1, "prefix", "exact repeat: hits 7 blocks"),
        Step("r03", a16, 1, "prefix", "256 tok = 8 full blocks: hits 7, stores block 7"),
        Step("r04", a16, 1, "prefix", "fully cached: last block recomputed, stored again"),
        Step("r05", chat, 8, "decode", "decode tokens complete block 1"),
        Step("r06", turn2, 1, "decode", "next turn carries r05's answer: hits blocks 0-1"),
        Step("r07", fillers[0], 1, "eviction", "unrelated 330 tok: first evictions"),
        Step("r08", b, 1, "eviction", "repeat r01: what survived?"),
        Step("r09", fillers[1], 1, "eviction", "unrelated 330 tok"),
        Step("r10", fillers[2], 1, "eviction", "unrelated 330 tok"),
        Step("r11", a, 1, "eviction", "repeat r00"),
        Step("r12", turn2, 1, "eviction", "repeat r06"),
        Step("r13", fillers[3], 1, "eviction", "unrelated 400 tok"),
        Step("r14", a16, 1, "eviction", "repeat r03"),
    ]
    return [Step(x.name, tuple(x.prompt), x.max_tokens, x.phase, x.note) for x in s]


@dataclass(frozen=True)
class ConcurrentGroup:
    name: str
    steps: tuple[Step, ...]
    stagger_s: float  # delay between sends: fixes the arrival order where it matters


def build_concurrent(seed: int = 11) -> list[ConcurrentGroup]:
    """Two groups sent at once each (not exactly reproducible: step timing decides interleaving).

    preempt: two 256-token prompts (8 blocks) with 240 outputs (16 blocks at the end), 23 usable:
      if c1 is admitted before c0 holds 16 blocks (c0's first ~224 decode steps), the two cannot
      both grow and the last running request (c1) is preempted once (recompute); it returns after
      c0 finished.
    waiting: w0 (480 tok, 15 blocks, 32 outputs) runs; w1 (300 tok, 10 blocks) must wait for it.
      vLLM 0.32 counts w1's prefix-cache query once, at admission: queries grow by exactly 780.
    """
    rng = random.Random(seed)
    preempt = tuple(
        Step(
            f"c{i}",
            tuple(_unique_tokens(rng, 256)),
            240,
            "concurrent-preempt",
            "two requests whose KV cannot both fit",
        )
        for i in range(2)
    )
    waiting = (
        Step("w0", tuple(_unique_tokens(rng, 480)), 32, "concurrent-waiting", "holds 15-16 blocks"),
        Step("w1", tuple(_unique_tokens(rng, 300)), 1, "concurrent-waiting", "waits for blocks"),
    )
    return [ConcurrentGroup("preempt", preempt, 0.0), ConcurrentGroup("waiting", waiting, 0.02)]


@dataclass
class StepResult:
    step: Step
    prompt_ids: list[int]
    output_ids: list[int]
    cached_tokens: int | None
    prompt_tokens: int | None
    metrics: dict[str, float]
    events_end: int  # index into the event log after this step's events went quiet
    error: str | None = None


@dataclass
class Playback:
    results: list[StepResult] = field(default_factory=list)
    idle_metrics: dict[str, float] = field(default_factory=dict)

    def generated(self) -> dict[str, list[int]]:
        return {r.step.name: r.output_ids for r in self.results}


def resolve(prompt: tuple[Token, ...], generated: dict[str, list[int]]) -> list[int]:
    return [t if isinstance(t, int) else generated[t.request][t.index] for t in prompt]


def post_completion(
    url: str, prompt_ids: list[int], max_tokens: int, timeout_s: float = 120
) -> dict:
    body = {
        "model": SERVED_MODEL,
        "prompt": prompt_ids,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "return_token_ids": True,
    }
    req = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def _answer_fields(answer: dict) -> tuple[list[int], int | None, int | None]:
    usage = answer.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return (
        list(answer["choices"][0].get("token_ids") or []),
        details.get("cached_tokens"),
        usage.get("prompt_tokens"),
    )


def play(
    server: Server, collector: EventCollector, steps: list[Step], playback: Playback
) -> Playback:
    from parity_metrics import scrape

    for step in steps:
        prompt_ids = resolve(step.prompt, playback.generated())
        answer = post_completion(server.url, prompt_ids, step.max_tokens)
        output_ids, cached, prompt_tokens = _answer_fields(answer)
        events_end = collector.drain_quiet()
        playback.results.append(
            StepResult(
                step, prompt_ids, output_ids, cached, prompt_tokens, scrape(server.url), events_end
            )
        )
    return playback


def play_concurrent(
    server: Server, collector: EventCollector, group: ConcurrentGroup, playback: Playback
) -> Playback:
    """Send the group's steps at once (staggered by `group.stagger_s`); wait for all."""
    from parity_metrics import scrape

    answers: dict[str, dict | str] = {}

    def send(step: Step) -> None:
        try:
            answers[step.name] = post_completion(server.url, list(step.prompt), step.max_tokens)
        except OSError as err:
            answers[step.name] = f"{type(err).__name__}: {err}"

    steps = group.steps
    threads = [threading.Thread(target=send, args=(s,)) for s in steps]
    for thread in threads:
        thread.start()
        time.sleep(group.stagger_s)
    for thread in threads:
        thread.join(timeout=300)
    events_end = collector.drain_quiet()
    metrics = scrape(server.url)
    for step in steps:
        answer = answers.get(step.name, "no answer")
        if isinstance(answer, str):
            playback.results.append(
                StepResult(step, list(step.prompt), [], None, None, metrics, events_end, answer)
            )
            continue
        output_ids, cached, prompt_tokens = _answer_fields(answer)
        playback.results.append(
            StepResult(
                step, list(step.prompt), output_ids, cached, prompt_tokens, metrics, events_end
            )
        )
    return playback
