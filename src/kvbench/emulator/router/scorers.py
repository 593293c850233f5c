"""Load scorers of GIE v1.2 / llm-d-inference-scheduler v0.4 and the scorer contract.

Contract: `score(request, endpoints)` returns a score in [0, 1] for each candidate endpoint (keyed
by address); the scheduler clamps and weights them. `pre_request` runs for the chosen endpoint
before the request is forwarded, `response_complete` when its response has ended (either way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kvbench.emulator.router.endpoints import Endpoint
from kvbench.emulator.router.request import RouterRequest


@dataclass
class ScorerOutput:
    scores: dict[str, float]
    # Predicted prompt tokens already cached on each endpoint, where the scorer can say.
    hit_tokens: dict[str, int] | None = None
    extra: dict = field(default_factory=dict)


class Scorer(Protocol):
    type: str
    name: str

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput: ...

    def pre_request(self, request: RouterRequest, chosen: Endpoint) -> None: ...

    def response_complete(self, request: RouterRequest, chosen: Endpoint) -> None: ...


class _NoHooks:
    def pre_request(self, request: RouterRequest, chosen: Endpoint) -> None:
        pass

    def response_complete(self, request: RouterRequest, chosen: Endpoint) -> None:
        pass


def min_max_inverted(values: dict[str, float]) -> dict[str, float]:
    """(max - v) / (max - min); every value equal -> 1.0 (GIE queue scorer)."""
    if not values:
        return {}
    low, high = min(values.values()), max(values.values())
    if high == low:
        return {key: 1.0 for key in values}
    return {key: (high - value) / (high - low) for key, value in values.items()}


class QueueScorer(_NoHooks):
    type = "queue-scorer"

    def __init__(self, name: str) -> None:
        self.name = name

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput:
        waiting = {e.address: float(e.metrics.waiting_requests) for e in endpoints}
        return ScorerOutput(min_max_inverted(waiting))


class KVCacheUtilizationScorer(_NoHooks):
    type = "kv-cache-utilization-scorer"

    def __init__(self, name: str) -> None:
        self.name = name

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput:
        return ScorerOutput({e.address: 1.0 - e.metrics.kv_cache_usage for e in endpoints})


class LoadAwareScorer(_NoHooks):
    """0.5 for an empty queue, else 0.5 * (1 - min(q, threshold) / threshold) (llm-d v0.4)."""

    type = "load-aware-scorer"

    def __init__(self, name: str, threshold: int = 128) -> None:
        self.name = name
        self.threshold = max(1, threshold)

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput:
        scores = {}
        for endpoint in endpoints:
            queue = endpoint.metrics.waiting_requests
            scores[endpoint.address] = (
                0.5 if queue == 0 else 0.5 * (1 - min(queue, self.threshold) / self.threshold)
            )
        return ScorerOutput(scores)


def parse_duration_s(value: str | int | float) -> float:
    """Go durations as llm-d configs write them ("2m", "30s", "500ms", "1h"); numbers are seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    raise ValueError(f"not a duration: {value!r}")


class ActiveRequestScorer:
    """(maxCount - count) / maxCount over the router's own in-flight requests; idle pods -> 1.0.

    A request counts from pre_request until response_complete or until `request_timeout_s` passes
    (llm-d's TTL cache, default 2 m). `clock` returns monotonic seconds.
    """

    type = "active-request-scorer"

    def __init__(
        self, name: str, clock: Callable[[], float], request_timeout_s: float = 120.0
    ) -> None:
        self.name = name
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self._started_s: dict[str, dict[str, float]] = {}  # address -> request_id -> start time

    def count(self, address: str) -> int:
        requests = self._started_s.get(address, {})
        deadline = self.clock() - self.request_timeout_s
        for request_id in [r for r, started in requests.items() if started < deadline]:
            del requests[request_id]
        return len(requests)

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput:
        counts = {e.address: self.count(e.address) for e in endpoints}
        max_count = max(counts.values(), default=0)
        if max_count == 0:
            return ScorerOutput({address: 1.0 for address in counts})
        return ScorerOutput({a: (max_count - c) / max_count for a, c in counts.items()})

    def pre_request(self, request: RouterRequest, chosen: Endpoint) -> None:
        self._started_s.setdefault(chosen.address, {})[request.request_id] = self.clock()

    def response_complete(self, request: RouterRequest, chosen: Endpoint) -> None:
        self._started_s.get(chosen.address, {}).pop(request.request_id, None)
