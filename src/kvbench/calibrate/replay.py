"""The probe's operating points replayed on the simulated target, for calibrate's request-path fit.

What a request spends outside the modelled GPU step (the API server, engine-core IPC, the
simulated stack's own client, router and wake-up delays) cannot be read off the probe by
subtracting the cost model's step time: the simulated stack adds delays of its own, and under load
the split of the probe's time into queue, prefill and the rest does not carry over. So the
request-path terms are fitted the way they are used: the probe's own points run on the very
stack `target: {kind: simulated}` builds (one engine, scenario no-offload, the probed server's GPU
blocks), with a candidate profile, and compared with what the probe measured.

Contract:
- `Replayer(server, profile_path)` replays on a fresh stack per call (every cache empty); prompts
  are fresh token ids from a seeded generator, never repeated within a call, so nothing is cached
  unless the point means it (as the probe's prompts);
- `lone_ttfts_s(prompt_lengths, output_tokens)`: one request at a time, each sent when the
  previous one finished; -> each one's TTFT (client side: sent -> first token);
- `closed_loop(...)`: `concurrency` streams, each sending its next request when the previous one
  finished, until `duration_s` of virtual time; then the ones in flight finish. A request is a
  fresh prompt, or with `prefixes` one of that many shared prefixes of `cached_prefix_tokens`
  (each sent once, alone, before the loop, as the probe caches them) plus fresh tokens. -> the
  mean TTFT over every request, the output tokens / (last finish - start) (what the probe's
  point reports: `vllm:generation_tokens_total` over its duration, in-flight tail included) and
  the median TPOT (calibrate/fit.py's `tpot_s`, as for the probe's requests).
Deterministic: the same inputs give the same numbers.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvbench.calibrate.fit import median_tpot_s, tpot_s
from kvbench.emulator.stack import EngineSettings
from kvbench.loadgen.history import ConversationState
from kvbench.results.records import Phase, RequestRecord, RequestStatus
from kvbench.simulate.cell import prompt_front
from kvbench.simulate.client import LevelSender, SimClient, TurnDone
from kvbench.simulate.events import EventLoop, RunEnd
from kvbench.simulate.stack import SimStack, build_stack
from kvbench.spec.scenarios import load_catalog
from kvbench.workload.types import Conversation, Turn

REPLAY_SCENARIO = "no-offload"
REPLAY_TIMEOUT_S = 600.0
FIRST_TOKEN_ID = 1000  # prompts use ids above the special tokens of every catalog model
TOKEN_ID_SPAN = 100_000


@dataclass(frozen=True)
class ProbedServer:
    """The probed vLLM server's engine settings that the replay's engine takes."""

    model: str
    num_gpu_blocks: int | None  # None: what the profile's memory gives
    block_size: int = 16


@dataclass(frozen=True)
class ClosedLoopResult:
    ttft_mean_s: float
    output_tok_s: float
    requests: int
    tpot_p50_s: float | None = None


class _FreshPrompts:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._count = 0

    def conversation(
        self, prompt_tokens: int, output_tokens: int, prefix: tuple[int, ...] = ()
    ) -> Conversation:
        """A one-turn conversation: `prefix`, then fresh ids up to `prompt_tokens` (the first fresh
        one unique to it, so no two fresh parts share a block)."""
        self._count += 1
        first = FIRST_TOKEN_ID + TOKEN_ID_SPAN + self._count
        rest = [
            FIRST_TOKEN_ID + self._rng.randrange(TOKEN_ID_SPAN)
            for _ in range(prompt_tokens - len(prefix) - 1)
        ]
        question = (*prefix, first, *rest)
        return Conversation(f"replay-{self._count}", (), [Turn(question, output_tokens)])


class Replayer:
    def __init__(self, server: ProbedServer, profile_path: Path, seed: int = 0) -> None:
        self.server = server
        self.profile_path = profile_path
        self.seed = seed

    def _stack(self, loop: EventLoop) -> SimStack:
        settings = EngineSettings(
            model=self.server.model,
            served_model_name=self.server.model,
            gpu_memory_utilization=None,
            num_gpu_blocks_override=self.server.num_gpu_blocks,
            max_num_seqs=None,  # the server's default, as the probed vLLM ran
            block_size=self.server.block_size,
            seed=self.seed,
        )
        return build_stack(
            loop,
            load_catalog(),
            REPLAY_SCENARIO,
            {},
            settings,
            str(self.profile_path),
            None,
            self.seed,
        )

    def lone_ttfts_s(self, prompt_lengths: list[int], output_tokens: int) -> list[float]:
        run = _Run(self._stack)
        prompts = _FreshPrompts(self.seed)
        pending = list(prompt_lengths)

        def send_next(state: ConversationState | None = None, more: bool = False) -> None:
            if pending:
                run.send(prompts.conversation(pending.pop(0), output_tokens), send_next)

        try:
            send_next()
            run.until(lambda: len(run.records) == len(prompt_lengths))
        finally:
            run.close()
        return [_ttft_s(record) for record in run.records]

    def closed_loop(
        self,
        concurrency: int,
        prompt_tokens: int,
        output_tokens: int,
        duration_s: float,
        cached_prefix_tokens: int = 0,
        prefixes: int = 0,
    ) -> ClosedLoopResult:
        run = _Run(self._stack)
        prompts = _FreshPrompts(self.seed)
        shared = [
            prompts.conversation(cached_prefix_tokens, 1).turns[0].question_token_ids
            for _ in range(prefixes if cached_prefix_tokens else 0)
        ]
        turns = itertools.count()
        try:
            for prefix in shared:  # cached alone, before the loop
                run.send(Conversation("prime", (), [Turn(prefix, 1)]), lambda state, more: None)
                run.until(lambda: run.sender.in_flight == 0)
            run.records.clear()
            start_s = run.loop.now_s

            def send_next(state: ConversationState | None = None, more: bool = False) -> None:
                if run.loop.now_s - start_s < duration_s:
                    prefix = shared[next(turns) % len(shared)] if shared else ()
                    run.send(prompts.conversation(prompt_tokens, output_tokens, prefix), send_next)

            for _ in range(concurrency):
                send_next()
            run.until(lambda: run.sender.in_flight == 0)
        finally:
            run.close()
        records = run.records
        ok = [r for r in records if r.status == RequestStatus.OK.value]
        end_s = max((r.end_s or start_s for r in ok), default=start_s)
        output_tokens_total = sum(r.output_tokens for r in ok)
        return ClosedLoopResult(
            ttft_mean_s=statistics.fmean(_ttft_s(r) for r in ok) if ok else float("nan"),
            output_tok_s=output_tokens_total / (end_s - start_s) if end_s > start_s else 0.0,
            requests=len(ok),
            tpot_p50_s=median_tpot_s(
                [
                    tpot_s(r.first_token_s, r.end_s, r.output_tokens)
                    for r in ok
                    if r.end_s is not None and r.first_token_s is not None
                ]
            ),
        )


class _Run:
    """One replay: a fresh stack on its own virtual clock, the client's sender for it, and every
    record it has delivered."""

    def __init__(self, build: Callable[[EventLoop], SimStack]) -> None:
        self.loop = EventLoop()
        self.stack = build(self.loop)
        self.records: list[RequestRecord] = []
        client = SimClient(
            self.loop,
            self.stack.router,
            self.stack.served_model_name,
            REPLAY_TIMEOUT_S,
            self.stack.prompt_tokens_details,
            prompt_front(self.stack),
        )
        self.sender: LevelSender = client.level("replay", 1.0, self.records.append)

    def send(self, conversation: Conversation, on_done: TurnDone) -> None:
        state = ConversationState(conversation, conversation.conversation_id, 0)
        self.sender.send(state, self.loop.now_s, Phase.MEASURE, on_done)

    def until(self, done: Callable[[], bool]) -> None:
        end = self.loop.run(done)
        if end is not RunEnd.DONE:
            raise RuntimeError(f"calibrate replay: the simulation ended ({end.value}) early")

    def close(self) -> None:
        self.stack.close()


def _ttft_s(record: RequestRecord) -> float:
    if record.status != RequestStatus.OK.value or record.first_token_s is None:
        raise RuntimeError(f"calibrate replay: request {record.request_id} ended {record.status}")
    return record.first_token_s - record.sent_s
