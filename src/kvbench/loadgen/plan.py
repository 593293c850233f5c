"""Values that cross the load generator's boundary (re-exported by kvbench.loadgen.api)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvbench.results.records import Phase

if TYPE_CHECKING:
    from kvbench.loadgen.transport import Capabilities

STRATEGIES = ("concurrent", "constant", "poisson", "synchronous", "throughput")
APIS = ("completions", "chat")


@dataclass
class EndpointConfig:
    base_url: str  # e.g. http://127.0.0.1:8000
    model_name: str
    api: str = "completions"  # or "chat"
    stream: bool = True
    request_timeout_s: float = 600.0
    # None: probe the server once per run_level; a caller keeps a probe's answer for later levels
    # with `with_capabilities(result.probed)` (run_level never changes the config it is given).
    return_token_ids: bool | None = None
    # Whether to send `min_tokens` (vLLM accepts it); None: learned by the same probe.
    send_min_tokens: bool | None = None

    def with_capabilities(self, caps: Capabilities | None) -> EndpointConfig:
        """This config with a probe's answer filled in (unchanged when `caps` is None)."""
        if caps is None:
            return self
        return dataclasses.replace(
            self, return_token_ids=caps.return_token_ids, send_min_tokens=caps.min_tokens
        )


@dataclass
class LevelPlan:
    strategy: str  # concurrent | constant | poisson | synchronous | throughput
    level: float  # concurrency (concurrent/throughput) or req/s (constant/poisson); ignored by synchronous
    duration_s: float | None
    max_requests: int | None  # measured requests (warmup/cooldown ones are extra)
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    max_concurrency: int | None = None
    seed: int = 0
    # Set for a level that only primes the cache: its records carry this phase (decided here, once;
    # nothing rewrites a record's phase afterwards). None: the window decides (warmup/measure/...).
    record_phase: Phase | None = None
    # concurrent: stream i sends its first request stagger_offsets_s(...)[i] seconds after the level
    # starts (seeded uniform offsets in [0, stagger_s)), so fixed-length streams do not run in
    # lock-step waves. 0 = every stream starts at once.
    stagger_s: float = 0.0


class RunClock:
    """Monotonic run clock: now_s() = seconds since run start (perf_counter based)."""

    def __init__(self, t0_perf: float | None = None) -> None:
        self.t0_perf = time.perf_counter() if t0_perf is None else t0_perf

    def now_s(self) -> float:
        return time.perf_counter() - self.t0_perf


@dataclass(slots=True)
class ProgressUpdate:
    cell_id: str
    done: int
    ok: int
    errors: int  # error + timeout + cancelled
    in_flight: int
    elapsed_s: float
    output_tokens: int = 0  # output tokens of the successful requests so far (0: not counted)


@dataclass
class LevelResult:
    counts: dict[str, int]  # ok / error / timeout / cancelled
    measure_start_s: float  # run-clock seconds
    measure_end_s: float
    client_stats: dict[
        str, float | None
    ]  # dispatch_lag_ms_*, event_loop_lag_ms_*, client_cpu_percent_*
    system_samples: list[tuple[float, str, str, float]]  # (ts_s, source, metric, value)
    notes: list[str] = field(
        default_factory=list
    )  # e.g. "conversations cycled", "no cached tokens"
    return_token_ids: bool = False
    probed: Capabilities | None = None  # what this level's probe decided (None: no probe decided)
    sent: int = 0
    peak_in_flight: int = 0
