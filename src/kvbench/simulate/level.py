"""One load level in virtual time: window, conversation source, strategy, and the run itself.

Contract: `run_level` returns when the strategy has stopped sending and nothing is in flight
(the live run_level's end), with the measurement window in virtual seconds. It raises
`SimulationStalled` (with the reason) when nothing was sent or finished for `stall_after_s` of
virtual time while the level had not ended: a request no engine can schedule ends by its timeout,
so a quiet period longer than timeout + think time + slot gap means the cell cannot progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvbench.loadgen.history import ConversationSource
from kvbench.loadgen.plan import LevelPlan, ProgressUpdate
from kvbench.loadgen.window import LevelWindow
from kvbench.results.records import RequestRecord, RequestStatus
from kvbench.simulate.client import SimClient
from kvbench.simulate.events import EventLoop, RunEnd, SimulationStalled
from kvbench.simulate.strategies import build_strategy
from kvbench.workload.types import Conversation

PROGRESS_EVERY_RECORDS = 50
__all__ = ["LevelOutcome", "SimulationStalled", "run_level", "stall_after_s"]


@dataclass
class LevelOutcome:
    counts: dict[str, int]
    measure_start_s: float
    measure_end_s: float
    start_s: float
    end_s: float
    sent: int = 0
    peak_in_flight: int = 0
    notes: list[str] = field(default_factory=list)


def stall_after_s(plan: LevelPlan, conversations: list[Conversation], timeout_s: float) -> float:
    think_s = max((c.think_time_s for c in conversations), default=0.0)
    slot_gap_s = 1.0 / plan.level if plan.strategy in ("constant", "poisson") else 0.0
    return timeout_s + think_s + 10.0 * slot_gap_s + 10.0


def run_level(
    loop: EventLoop,
    client: SimClient,
    conversations: list[Conversation],
    plan: LevelPlan,
    cell_id: str,
    on_record: Callable[[RequestRecord], None],
    on_progress: Callable[[ProgressUpdate], None] | None = None,
) -> LevelOutcome:
    start_s = loop.now_s
    window = LevelWindow(
        start_perf=start_s,
        duration_s=plan.duration_s,
        max_requests=plan.max_requests,
        warmup_s=plan.warmup_s,
        cooldown_s=plan.cooldown_s,
    )
    source = ConversationSource(conversations, cycle=window.cycles, seed=plan.seed)
    progress = _Progress(cell_id, start_s, loop, on_record, on_progress)
    sender = client.level(cell_id, plan.level, progress.record, plan.record_phase)
    strategy = build_strategy(
        loop,
        sender,
        window,
        source,
        plan.strategy,
        plan.level,
        plan.max_concurrency,
        plan.seed,
        plan.stagger_s,
    )
    strategy.start()
    quiet_s = stall_after_s(plan, conversations, client.request_timeout_s)

    def finished() -> bool:
        return strategy.done and sender.in_flight == 0

    last = (-1, -1)
    while True:
        end = loop.run(finished, limit_s=loop.now_s + quiet_s)
        if end is not RunEnd.LIMIT:
            break
        now = (sender.sent, progress.done)
        if now == last:
            raise SimulationStalled(
                f"no request was sent or finished for {quiet_s:g} s of simulated time "
                f"({sender.in_flight} in flight, {sender.sent} sent): the cell cannot progress"
            )
        last = now
    if end is RunEnd.IDLE and not finished():
        raise SimulationStalled("the simulation ran out of events before the level ended")
    measure_end_s = window.measure_end_perf if window.measure_end_perf is not None else loop.now_s
    progress.flush()
    return LevelOutcome(
        counts={status.value: sender.counts[status.value] for status in RequestStatus},
        measure_start_s=window.measure_start_perf,
        measure_end_s=measure_end_s,
        start_s=start_s,
        end_s=loop.now_s,
        sent=sender.sent,
        peak_in_flight=sender.peak_in_flight,
        notes=_notes(source),
    )


def _notes(source: ConversationSource) -> list[str]:
    if source.passes_started > 1:
        return [
            f"conversations ran out before the level ended: cycled {source.passes_started} passes "
            f"under fresh conversation ids (<id>~c<pass>); repeated token ids can hit earlier cache"
        ]
    return []


class _Progress:
    """Counts records and hands a ProgressUpdate on every PROGRESS_EVERY_RECORDS of them; its
    elapsed_s is simulated time, so tokens / elapsed_s is the simulated-time throughput."""

    def __init__(
        self,
        cell_id: str,
        start_s: float,
        loop: EventLoop,
        on_record: Callable[[RequestRecord], None],
        on_progress: Callable[[ProgressUpdate], None] | None,
    ) -> None:
        self.cell_id, self.start_s, self.loop = cell_id, start_s, loop
        self.on_record, self.on_progress = on_record, on_progress
        self.done = 0
        self.ok = 0
        self.output_tokens = 0  # of the successful requests (the live executor's count)

    def record(self, record: RequestRecord) -> None:
        self.done += 1
        if record.status == RequestStatus.OK.value:
            self.ok += 1
            self.output_tokens += record.output_tokens
        self.on_record(record)
        if self.on_progress is not None and self.done % PROGRESS_EVERY_RECORDS == 0:
            self.flush()

    def flush(self) -> None:
        if self.on_progress is not None:
            self.on_progress(
                ProgressUpdate(
                    self.cell_id,
                    self.done,
                    self.ok,
                    self.done - self.ok,
                    0,
                    self.loop.now_s - self.start_s,
                    self.output_tokens,
                )
            )
