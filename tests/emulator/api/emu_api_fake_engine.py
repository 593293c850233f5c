"""A tiny stand-in Engine for driver-level tests (deadline arithmetic, stream coalescing).

Every step: waiting requests are admitted and produce their first token; running ones one more.
Duration is fixed per step. Prefix hits: whole prompt blocks already seen (block_size 4).
"""

from __future__ import annotations

from kvbench.emulator.engine.interface import (
    BlockStored,
    EngineRequest,
    EngineStats,
    FinishReason,
    RequestOutput,
    StepResult,
    TierHits,
)


class FakeEngine:
    def __init__(self, step_duration_s: float = 0.005, block_size: int = 4) -> None:
        self.step_duration_s = step_duration_s
        self.block_size = block_size
        self.max_model_len = 256
        self._waiting: list[EngineRequest] = []
        self._running: dict[str, tuple[EngineRequest, int]] = {}
        self._seen_blocks: set[tuple[int, ...]] = set()
        self.step_times: list[float] = []
        self.aborted: list[str] = []
        self._stats = EngineStats(block_size=block_size, num_gpu_blocks=100)
        self._last: dict[str, RequestOutput] = {}

    def add_request(self, request: EngineRequest) -> None:
        self._waiting.append(request)

    def abort_request(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self._running.pop(request_id, None)
        self._waiting = [r for r in self._waiting if r.request_id != request_id]

    def has_unfinished_requests(self) -> bool:
        return bool(self._waiting or self._running)

    def reset_prefix_cache(self) -> bool:
        self._seen_blocks.clear()
        return True

    def stats(self) -> EngineStats:
        self._stats.num_requests_running = len(self._running)
        self._stats.num_requests_waiting = len(self._waiting)
        return self._stats

    def _admit(self, req: EngineRequest, events: list) -> RequestOutput:
        ids, bs = req.prompt_token_ids, self.block_size
        blocks = [tuple(ids[: i + bs]) for i in range(0, (len(ids) - 1) // bs * bs, bs)]
        hit = 0
        for b in blocks:
            if b not in self._seen_blocks:
                break
            hit += bs
        new = [b for b in blocks if b not in self._seen_blocks]
        if new:
            events.append(
                BlockStored(
                    [hash(b) & 0xFFFF for b in new], None, list(ids[hit : hit + bs * len(new)]), bs
                )
            )
        self._seen_blocks.update(blocks)
        self._stats.prefix_cache_queries += len(ids)
        self._stats.prefix_cache_hits += hit
        self._stats.prompt_tokens += len(ids)
        self._running[req.request_id] = (req, 0)
        return RequestOutput(
            req.request_id,
            [],
            num_prompt_tokens=len(ids),
            num_cached_tokens=hit,
            hits=TierHits(gpu_tokens=hit),
        )

    def step(self, now_s: float) -> StepResult:
        self.step_times.append(now_s)
        events: list = []
        admitted = {r.request_id: self._admit(r, events) for r in self._waiting}
        self._waiting = []
        outputs = []
        for rid, (req, n) in list(self._running.items()):
            base = admitted.get(rid) or RequestOutput(
                rid, [], num_prompt_tokens=len(req.prompt_token_ids)
            )
            n += 1
            base.new_token_ids = [1000 + n]
            if rid not in admitted:
                prev = self._last[rid]
                base.num_cached_tokens, base.hits = prev.num_cached_tokens, prev.hits
            self._stats.generation_tokens += 1
            if n >= req.max_tokens:
                base.finished, base.finish_reason = True, FinishReason.LENGTH
                del self._running[rid]
                self._stats.request_success["length"] = (
                    self._stats.request_success.get("length", 0) + 1
                )
            else:
                self._running[rid] = (req, n)
            outputs.append(base)
        self._last = {o.request_id: o for o in outputs}
        return StepResult(
            self.step_duration_s,
            outputs,
            events,
            num_scheduled_tokens=len(outputs),
            num_running=len(self._running),
        )
