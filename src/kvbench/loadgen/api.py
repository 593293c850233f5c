"""The load generator's public API: run one load level of one cell, and the GuideLLM-style sweep.

`run_level` sends the conversations (in list order, the workload's reuse order) to the endpoint
under the level's strategy, hands every finished request to `on_record` as it finishes, and returns
counts, the measurement window and the client's own health (dispatch lag, event-loop lag, CPU).
Request failures never raise: each is a record with its cause. Cancelling the task that runs
`run_level` (Ctrl-C) cancels in-flight requests, records them as cancelled, then re-raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from kvbench.errors import UserError
from kvbench.loadgen.capabilities import resolve_capabilities
from kvbench.loadgen.executor import TurnExecutor
from kvbench.loadgen.history import ConversationSource
from kvbench.loadgen.monitor import ClientMonitor
from kvbench.loadgen.plan import (
    APIS,
    STRATEGIES,
    EndpointConfig,
    LevelPlan,
    LevelResult,
    ProgressUpdate,
    RunClock,
)
from kvbench.loadgen.schedule import constant_arrivals, poisson_arrivals
from kvbench.loadgen.strategies import (
    LevelContext,
    run_concurrent,
    run_rate,
)
from kvbench.loadgen.transport import OpenAIClient
from kvbench.loadgen.window import LevelWindow
from kvbench.results.records import RequestRecord, RequestStatus
from kvbench.workload.types import Conversation

__all__ = [
    "EndpointConfig",
    "LevelPlan",
    "LevelResult",
    "ProgressUpdate",
    "RunClock",
    "run_level",
    "sweep_rates",
]


def sweep_rates(sync_rps: float, throughput_rps: float, sweep_size: int) -> list[float]:
    """GuideLLM's sweep: synchronous, throughput, then np.linspace(sync, thr, sweep_size - 1)[1:]."""
    if sweep_size < 2:
        raise UserError(f"sweep_size must be >= 2 (synchronous + throughput), got {sweep_size}")
    between = np.linspace(sync_rps, throughput_rps, sweep_size - 1)[1:]
    return [float(sync_rps), float(throughput_rps), *(float(rate) for rate in between)]


def validate_plan(endpoint: EndpointConfig, plan: LevelPlan) -> None:
    if plan.strategy not in STRATEGIES:
        raise UserError(f"level strategy {plan.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if endpoint.api not in APIS:
        raise UserError(f"endpoint api {endpoint.api!r} is not one of {', '.join(APIS)}")
    if plan.strategy in ("concurrent", "constant", "poisson") and not plan.level > 0:
        raise UserError(f"level for strategy {plan.strategy} must be > 0, got {plan.level}")
    if plan.strategy == "throughput" and not (plan.max_concurrency or plan.level > 0):
        raise UserError("strategy throughput needs max_concurrency (or level) > 0")
    if plan.max_concurrency is not None and plan.max_concurrency < 1:
        raise UserError(f"level max_concurrency must be >= 1, got {plan.max_concurrency}")
    if plan.duration_s is not None and plan.duration_s <= 0:
        raise UserError(f"level duration_s must be > 0, got {plan.duration_s}")


def validate_conversations(endpoint: EndpointConfig, conversations: list[Conversation]) -> None:
    if endpoint.api != "chat":
        return
    for conversation in conversations:
        for index, turn in enumerate(conversation.turns):
            if turn.question_text is None:
                raise UserError(
                    f"api=chat needs question_text; conversation {conversation.conversation_id!r} "
                    f"turn {index} has none (use api=completions for token-id workloads)"
                )


def _connection_limit(plan: LevelPlan) -> int:
    """Pool size for the strategy's own cap (0: unbounded, rate strategies without a cap)."""
    if plan.strategy == "synchronous":
        return 1
    if plan.strategy == "concurrent":
        return int(plan.level)
    if plan.strategy == "throughput":
        return int(plan.max_concurrency or plan.level)
    return int(plan.max_concurrency or 0)


async def _run_strategy(ctx: LevelContext, plan: LevelPlan, start_perf: float) -> None:
    if plan.strategy == "synchronous":
        await run_concurrent(ctx, 1)
    elif plan.strategy == "concurrent":
        await run_concurrent(ctx, int(plan.level), plan.stagger_s, plan.seed)
    elif plan.strategy == "throughput":
        slots = iter(lambda: start_perf, None)  # every slot due at once
        await run_rate(ctx, slots, int(plan.max_concurrency or plan.level), schedule_is_slot=False)
    elif plan.strategy == "constant":
        await run_rate(ctx, constant_arrivals(start_perf, plan.level), plan.max_concurrency, True)
    else:
        await run_rate(
            ctx, poisson_arrivals(start_perf, plan.level, plan.seed), plan.max_concurrency, True
        )


async def run_level(
    endpoint: EndpointConfig,
    conversations: list[Conversation],
    plan: LevelPlan,
    *,
    cell_id: str,
    clock: RunClock,
    on_record: Callable[[RequestRecord], None],
    on_progress: Callable[[ProgressUpdate], None] | None = None,
) -> LevelResult:
    validate_plan(endpoint, plan)
    validate_conversations(endpoint, conversations)
    notes: list[str] = []
    ok_with_cache = _CachedTokensSeen(on_record)
    async with OpenAIClient(endpoint.base_url, _connection_limit(plan)) as client:
        caps, probe_note, probed = await resolve_capabilities(client, endpoint, conversations)
        if probe_note:
            notes.append(probe_note)
        start_perf = time.perf_counter()
        window = LevelWindow(
            start_perf=start_perf,
            duration_s=plan.duration_s,
            max_requests=plan.max_requests,
            warmup_s=plan.warmup_s,
            cooldown_s=plan.cooldown_s,
        )
        source = ConversationSource(conversations, cycle=window.cycles, seed=plan.seed)
        monitor = ClientMonitor(clock.now_s)
        executor = TurnExecutor(
            client=client,
            endpoint=endpoint,
            caps=caps,
            cell_id=cell_id,
            level=plan.level,
            run_t0_perf=clock.t0_perf,
            monitor=monitor,
            on_record=ok_with_cache,
            on_progress=on_progress,
            level_start_perf=start_perf,
            record_phase=plan.record_phase,
        )
        monitor.start()
        try:
            await _run_strategy(LevelContext(executor, window, source), plan, start_perf)
        finally:
            await monitor.stop()
    measure_end_perf = (
        window.measure_end_perf if window.measure_end_perf is not None else time.perf_counter()
    )
    notes.extend(_notes(source, caps.return_token_ids, endpoint, ok_with_cache))
    return LevelResult(
        counts={status.value: executor.counts[status.value] for status in RequestStatus},
        measure_start_s=window.measure_start_perf - clock.t0_perf,
        measure_end_s=measure_end_perf - clock.t0_perf,
        client_stats=monitor.stats(),
        system_samples=monitor.samples,
        notes=notes,
        return_token_ids=caps.return_token_ids,
        probed=caps if probed else None,
        sent=executor.sent,
        peak_in_flight=executor.peak_in_flight,
    )


class _CachedTokensSeen:
    """Passes records on, counting successful ones whose server reported cached_tokens."""

    def __init__(self, on_record: Callable[[RequestRecord], None]) -> None:
        self._on_record = on_record
        self.ok = 0
        self.with_cached_tokens = 0

    def __call__(self, record: RequestRecord) -> None:
        if record.status == RequestStatus.OK.value:
            self.ok += 1
            self.with_cached_tokens += record.cached_tokens is not None
        self._on_record(record)


def _notes(
    source: ConversationSource,
    return_token_ids: bool,
    endpoint: EndpointConfig,
    seen: _CachedTokensSeen,
) -> list[str]:
    notes = []
    if source.passes_started > 1:
        notes.append(
            f"conversations ran out before the level ended: cycled {source.passes_started} passes "
            f"under fresh conversation ids (<id>~c<pass>); repeated token ids can hit earlier cache"
        )
    if endpoint.api == "completions" and not return_token_ids:
        notes.append(
            "target returns no token ids: answer history is client-synthesized (history_synthesized)"
        )
    if seen.ok and not seen.with_cached_tokens:
        notes.append(
            "target reports no cached tokens (usage.prompt_tokens_details.cached_tokens absent; "
            "vLLM needs --enable-prompt-tokens-details)"
        )
    return notes
