"""The calibration probe: a short, fixed set of operating points sent to one running vLLM server.

Each point is a small batch of streamed /v1/completions requests with unique random prompt token
ids (so nothing is cached unless the point means it to be), sent at a controlled concurrency. For
every point the probe keeps each request's timings (send, first token, every token arrival,
end, as seconds from the point's start) and the deltas of the server's own counters across the
point (`vllm:iteration_tokens_total_count` = engine steps, queue / prefill / decode time sums,
offload bytes and times), so the fit (calibrate/fit.py) can separate GPU step time from what
happens around it (API server, engine-core IPC, scheduling delay).

Phases (`ProbePlan`): `overhead` (tiny prompts, one output token), `prefill` (TTFT against prompt
length, cold), `cached` (TTFT against the cached share of a prompt), `decode` (ITL against batch
size and context), `throughput` (a closed loop of unique requests), `throughput_cached` (the
same closed loop with every prompt a cached shared prefix plus a few new tokens: the engine
core's work per prompt token, which a lone cached prompt cannot tell from the API server's, slows
every step under load), and with a CPU tier
`offload_reload` (the same prompt after a GPU-only reset: served from the CPU tier).
Points that would not fit the server's GPU KV capacity are skipped, and the skip is recorded.
Every finished point is handed to `on_point` at once, so nothing measured is lost if a later
point fails.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from kvbench.collect.prometheus import Sample, parse_metrics
from kvbench.loadgen.outcome import RequestOutcome
from kvbench.loadgen.transport import COMPLETIONS_PATH, Capabilities, OpenAIClient, completions_body

PROMPT_ID_MIN = 100  # token ids the probe draws prompts from (inside every Qwen3 vocabulary)
PROMPT_ID_MAX = 4000
REQUEST_TIMEOUT_S = 120.0
STORE_SETTLE_S = 0.5  # time for an offload store to finish before the GPU-only reset
# Server counters kept per point: histogram sums/counts and counters (summed over label sets).
KEPT_FAMILIES = (
    "vllm:iteration_tokens_total",
    "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:external_prefix_cache_queries",
    "vllm:external_prefix_cache_hits",
    "vllm:kv_offload_load_bytes",
    "vllm:kv_offload_load_time",
    "vllm:kv_offload_store_bytes",
    "vllm:kv_offload_store_time",
    "vllm:kv_offload_lookup_sync_delay_seconds",
    "vllm:kv_offload_lookup_async_delay_seconds",
    "vllm:num_preemptions",
)


@dataclass(frozen=True)
class ProbePlan:
    """The operating points; the defaults take about a minute on one H200 per server."""

    overhead_requests: int = 16
    overhead_prompt_tokens: int = 16
    prefill_prompt_tokens: tuple[int, ...] = (64, 256, 1024, 2048, 4096, 8192)
    prefill_repeats: int = 4
    prefill_output_tokens: int = 16  # the ITL of a single decoding request at that context too
    cached_prompt_tokens: int = 4096
    cached_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.97)
    cached_repeats: int = 3
    decode_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    decode_contexts: tuple[int, ...] = (128, 1024, 4096)
    decode_output_tokens: int = 48
    throughput_concurrency: int = 64
    throughput_prompt_tokens: int = 512
    throughput_output_tokens: int = 128
    throughput_duration_s: float = 8.0
    # throughput_cached: the throughput loop's concurrency, output and duration; each prompt is one
    # of `prefixes` shared prefixes (cached before the loop) plus `new_tokens` fresh ones
    throughput_cached_prefix_tokens: int = 4096
    throughput_cached_prefixes: int = 8
    throughput_cached_new_tokens: int = 64
    reload_prompt_tokens: tuple[int, ...] = (1024, 4096, 8192)
    reload_repeats: int = 3


@dataclass
class ProbeRequest:
    """One request of a point; times are seconds from the point's start."""

    prompt_tokens: int
    max_tokens: int
    sent_s: float
    first_token_s: float | None
    end_s: float | None
    token_s: list[float]  # arrival of every streamed token (one per chunk token)
    cached_tokens: int | None  # usage.prompt_tokens_details.cached_tokens
    status: str
    error: str | None = None


@dataclass
class ProbePoint:
    phase: str
    label: str
    params: dict[str, Any]
    duration_s: float
    requests: list[ProbeRequest] = field(default_factory=list)
    server_deltas: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None  # why the point was not run

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeServer:
    """What the probe learns about the server before the points."""

    base_url: str
    model_name: str
    gpu_kv_capacity_tokens: int | None
    block_size: int | None
    has_cpu_tier: bool


class _Prompts:
    """Unique random prompts; `fresh(n)` never repeats a prompt's first block in one probe."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def fresh(self, count_tokens: int) -> list[int]:
        return [self._rng.randrange(PROMPT_ID_MIN, PROMPT_ID_MAX) for _ in range(count_tokens)]


def kept_counters(samples: list[Sample]) -> dict[str, float]:
    """Sum over label sets of every kept family's `_sum`, `_count` and `_total` samples."""
    totals: dict[str, float] = {}
    for sample in samples:
        if sample.family not in KEPT_FAMILIES:
            continue
        if sample.name.endswith(("_bucket", "_created")):
            continue
        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


class Probe:
    def __init__(
        self,
        server: ProbeServer,
        plan: ProbePlan,
        on_point: Callable[[ProbePoint], None],
        seed: int = 0,
    ) -> None:
        self.server = server
        self.plan = plan
        self.on_point = on_point
        self._prompts = _Prompts(seed)
        self._caps = Capabilities(return_token_ids=True, min_tokens=True)

    # ---- the whole probe
    async def run(self) -> None:
        plan = self.plan
        async with OpenAIClient(self.server.base_url, connection_limit=0) as client:
            self._client = client
            async with aiohttp.ClientSession() as session:
                self._session = session
                await self._point("warmup", "warmup", [(self._prompts.fresh(256), 8)] * 1, 1)
                await self._overhead()
                for length in plan.prefill_prompt_tokens:
                    await self._prefill(length)
                await self._cached()
                for context in plan.decode_contexts:
                    for batch in plan.decode_batch_sizes:
                        await self._decode(batch, context)
                await self._throughput()
                await self._throughput_cached()
                if self.server.has_cpu_tier:
                    for length in plan.reload_prompt_tokens:
                        await self._reload(length)

    # ---- phases
    async def _overhead(self) -> None:
        plan = self.plan
        prompts = [
            (self._prompts.fresh(plan.overhead_prompt_tokens), 1)
            for _ in range(plan.overhead_requests)
        ]
        await self._point("overhead", f"p{plan.overhead_prompt_tokens}-o1", prompts, 1)

    async def _prefill(self, length: int) -> None:
        if not self._fits(length + self.plan.prefill_output_tokens, 1, "prefill", f"p{length}"):
            return
        prompts = [
            (self._prompts.fresh(length), self.plan.prefill_output_tokens)
            for _ in range(self.plan.prefill_repeats)
        ]
        await self._point("prefill", f"p{length}", prompts, 1, {"prompt_tokens": length})

    async def _cached(self) -> None:
        plan = self.plan
        length = plan.cached_prompt_tokens
        if not self._fits(2 * length, 1, "cached", f"p{length}"):
            return
        for fraction in plan.cached_fractions:
            cached = int(length * fraction)
            pairs: list[tuple[list[int], int]] = []
            for _ in range(plan.cached_repeats):
                first = self._prompts.fresh(length)
                second = first[:cached] + self._prompts.fresh(length - cached)
                pairs += [(first, 1), (second, 1)]
            await self._point(
                "cached",
                f"p{length}-c{fraction:g}",
                pairs,
                1,
                {"prompt_tokens": length, "cached_tokens_sent": cached},
            )

    async def _decode(self, batch: int, context: int) -> None:
        out = self.plan.decode_output_tokens
        label = f"b{batch}-ctx{context}"
        if not self._fits(context + out, batch, "decode", label):
            return
        prompts = [(self._prompts.fresh(context), out) for _ in range(batch)]
        await self._point(
            "decode", label, prompts, batch, {"batch": batch, "prompt_tokens": context}
        )

    async def _throughput(self) -> None:
        plan = self.plan
        concurrency = plan.throughput_concurrency
        label = f"c{concurrency}-p{plan.throughput_prompt_tokens}-o{plan.throughput_output_tokens}"
        per_request = plan.throughput_prompt_tokens + plan.throughput_output_tokens
        if not self._fits(per_request, concurrency, "throughput", label):
            return
        prompt_tokens = plan.throughput_prompt_tokens
        params = {"prompt_tokens": prompt_tokens}
        await self._closed_loop(
            "throughput", label, params, lambda: self._prompts.fresh(prompt_tokens)
        )

    async def _throughput_cached(self) -> None:
        plan = self.plan
        concurrency = plan.throughput_concurrency
        prefix_tokens, new_tokens = (
            plan.throughput_cached_prefix_tokens,
            plan.throughput_cached_new_tokens,
        )
        count = plan.throughput_cached_prefixes
        label = f"c{concurrency}-x{count}x{prefix_tokens}-p{new_tokens}-o{plan.throughput_output_tokens}"
        # the prefixes' blocks are shared: each stream holds only its new and output tokens
        shared = count * prefix_tokens // concurrency
        if not self._fits(
            shared + new_tokens + plan.throughput_output_tokens,
            concurrency,
            "throughput_cached",
            label,
        ):
            return
        prefixes = [self._prompts.fresh(prefix_tokens) for _ in range(count)]
        for prefix in prefixes:  # cached before the loop (its counters do not see these)
            await self._send(prefix, 1, time.perf_counter())
        turn = itertools.count()
        params = {
            "prompt_tokens": prefix_tokens + new_tokens,
            "cached_prefix_tokens": prefix_tokens,
            "prefixes": count,
        }

        def prompt() -> list[int]:
            return prefixes[next(turn) % count] + self._prompts.fresh(new_tokens)

        await self._closed_loop("throughput_cached", label, params, prompt)

    async def _reload(self, length: int) -> None:
        """Prompt -> (store settles) -> GPU-only reset -> same prompt (CPU tier) -> again (GPU)."""
        if not self._fits(length + 1, 1, "offload_reload", f"p{length}"):
            return
        for repeat in range(self.plan.reload_repeats):
            prompt = self._prompts.fresh(length)
            params = {"prompt_tokens": length, "repeat": repeat}
            await self._point("offload_reload", f"p{length}-store", [(prompt, 1)], 1, params)
            await asyncio.sleep(STORE_SETTLE_S)
            reset_ok = await self._reset_gpu_prefix_cache()
            params = {**params, "gpu_reset": reset_ok}
            await self._point("offload_reload", f"p{length}-cpu-hit", [(prompt, 1)], 1, params)
            await self._point("offload_reload", f"p{length}-gpu-hit", [(prompt, 1)], 1, params)

    # ---- machinery
    def _fits(self, tokens_per_request: int, concurrency: int, phase: str, label: str) -> bool:
        capacity = self.server.gpu_kv_capacity_tokens
        needed = tokens_per_request * concurrency
        if capacity is not None and needed > 0.9 * capacity:
            self.on_point(
                ProbePoint(
                    phase,
                    label,
                    {"tokens_needed": needed},
                    0.0,
                    skipped=f"needs {needed} KV tokens; the server has {capacity}",
                )
            )
            return False
        return True

    async def _scrape(self) -> dict[str, float]:
        url = f"{self.server.base_url}/metrics"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return kept_counters(parse_metrics(text))

    async def _reset_gpu_prefix_cache(self) -> bool:
        url = f"{self.server.base_url}/reset_prefix_cache"
        for _ in range(20):
            try:
                async with self._session.post(url) as resp:
                    body = await resp.text()
                    if resp.status == 200 and '"success":false' not in body.replace(" ", ""):
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        return False

    async def _send(self, prompt: list[int], max_tokens: int, start_perf: float) -> ProbeRequest:
        body = completions_body(self.server.model_name, prompt, max_tokens, self._caps, True)
        outcome = RequestOutcome(sent_perf=time.perf_counter())
        await self._client.send(
            COMPLETIONS_PATH,
            body,
            outcome,
            stream=True,
            request_id=f"probe-{id(outcome)}",
            timeout_s=REQUEST_TIMEOUT_S,
        )
        return _probe_request(outcome, len(prompt), max_tokens, start_perf)

    async def _point(
        self,
        phase: str,
        label: str,
        prompts: list[tuple[list[int], int]],
        concurrency: int,
        params: dict[str, Any] | None = None,
    ) -> ProbePoint:
        """Send `prompts` in order, `concurrency` at a time (all at once when it equals the count)."""
        before = await self._scrape()
        start = time.perf_counter()
        results: list[ProbeRequest] = []
        queue = list(prompts)

        async def worker() -> None:
            while queue:
                prompt, max_tokens = queue.pop(0)
                results.append(await self._send(prompt, max_tokens, start))

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(prompts)))))
        duration = time.perf_counter() - start
        after = await self._scrape()
        point = ProbePoint(
            phase,
            label,
            dict(params or {}, concurrency=concurrency),
            duration,
            sorted(results, key=lambda r: r.sent_s),
            counter_deltas(before, after),
        )
        self.on_point(point)
        return point

    async def _closed_loop(
        self,
        phase: str,
        label: str,
        params: dict[str, Any],
        next_prompt: Callable[[], list[int]],
    ) -> None:
        """`throughput_concurrency` streams, each sending `next_prompt()` when its previous request
        ended, for `throughput_duration_s`; the point waits for the ones in flight."""
        plan = self.plan
        concurrency = plan.throughput_concurrency
        before = await self._scrape()
        start = time.perf_counter()
        deadline = start + plan.throughput_duration_s
        results: list[ProbeRequest] = []

        async def worker() -> None:
            while time.perf_counter() < deadline:
                results.append(
                    await self._send(next_prompt(), plan.throughput_output_tokens, start)
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - start
        after = await self._scrape()
        params = {
            "concurrency": concurrency,
            **params,
            "output_tokens": plan.throughput_output_tokens,
            "send_window_s": plan.throughput_duration_s,
        }
        self.on_point(
            ProbePoint(
                phase,
                label,
                params,
                duration,
                sorted(results, key=lambda r: r.sent_s),
                counter_deltas(before, after),
            )
        )


def _probe_request(
    outcome: RequestOutcome, prompt_tokens: int, max_tokens: int, start_perf: float
) -> ProbeRequest:
    token_s: list[float] = []
    for arrival, tokens in outcome.chunk_arrivals:
        token_s.extend([round(arrival - start_perf, 6)] * max(tokens, 1))
    usage = outcome.usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return ProbeRequest(
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        sent_s=round(outcome.sent_perf - start_perf, 6),
        first_token_s=token_s[0] if token_s else None,
        end_s=round(outcome.end_perf - start_perf, 6) if outcome.end_perf else None,
        token_s=token_s,
        cached_tokens=details.get("cached_tokens"),
        status=outcome.status,
        error=outcome.error,
    )
