"""One scheduling cycle: score the ready endpoints with every scorer of the profile, combine,
pick; then the PreRequest / ResponseComplete hooks. Produces the per-request decision record."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kvbench.emulator.router.endpoints import Endpoint
from kvbench.emulator.router.metrics import EppMetrics
from kvbench.emulator.router.picker import MaxScorePicker, weighted_totals
from kvbench.emulator.router.request import RouterRequest
from kvbench.emulator.router.scorers import Scorer


@dataclass
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass
class Decision:
    request: RouterRequest
    chosen: Endpoint
    candidates: list[str]
    scores: dict[str, dict[str, float]]  # scorer name -> address -> score in [0, 1]
    weights: dict[str, float]
    totals: dict[str, float]
    predicted_hit_tokens: int
    scheduling_s: float
    extra: dict = field(default_factory=dict)

    def log_record(self, wall_s: float, retries: int = 0) -> dict:
        return {
            "ts_s": wall_s,
            "request_id": self.request.request_id,
            "model": self.request.model,
            "endpoint": self.chosen.address,
            "endpoint_url": self.chosen.url,
            "candidates": self.candidates,
            "scores": self.scores,
            "weights": self.weights,
            "totals": self.totals,
            "predicted_hit_tokens": self.predicted_hit_tokens,
            "prompt_tokens": self.request.prompt_tokens_estimate,
            "scheduling_ms": round(self.scheduling_s * 1000, 4),
            "retries": retries,
            **self.extra,
        }


class Scheduler:
    def __init__(
        self,
        scorers: list[WeightedScorer],
        picker: MaxScorePicker,
        rng: random.Random,
        metrics: EppMetrics,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.scorers = scorers
        self.picker = picker
        self.rng = rng
        self.metrics = metrics
        self.timer = timer

    async def schedule(self, request: RouterRequest, endpoints: list[Endpoint]) -> Decision:
        started_s = self.timer()
        addresses = [e.address for e in endpoints]
        scores: dict[str, dict[str, float]] = {}
        hit_tokens: dict[str, int] | None = None
        extra: dict = {}
        for weighted in self.scorers:
            scorer = weighted.scorer
            plugin_started_s = self.timer()
            output = await scorer.score(request, endpoints)
            self._observe_plugin("Scorer", scorer.type, scorer.name, plugin_started_s)
            scores[scorer.name] = output.scores
            if output.hit_tokens is not None and (
                hit_tokens is None or scorer.type == "precise-prefix-cache-scorer"
            ):
                hit_tokens = output.hit_tokens
            if output.extra:
                extra[scorer.name] = output.extra
        weights = {w.scorer.name: w.weight for w in self.scorers}
        totals = weighted_totals(scores, weights, addresses)
        # A slow endpoint (its latest /metrics scrape timed out) stays routable, scored down.
        slow = [e.address for e in endpoints if e.health.slow]
        for endpoint in endpoints:
            totals[endpoint.address] *= endpoint.health.score_factor
        picker_started_s = self.timer()
        chosen_address = self.picker.pick(totals, self.rng)[0]
        self._observe_plugin("Picker", self.picker.type, self.picker.name, picker_started_s)
        chosen = endpoints[addresses.index(chosen_address)]
        scheduling_s = self.timer() - started_s
        self.metrics.scheduler_e2e_s.observe(scheduling_s)
        predicted = hit_tokens.get(chosen_address, 0) if hit_tokens else 0
        return Decision(
            request,
            chosen,
            addresses,
            scores,
            weights,
            totals,
            predicted,
            scheduling_s,
            _decision_extra(extra, slow),
        )

    def _observe_plugin(self, point: str, plugin_type: str, name: str, started_s: float) -> None:
        self.metrics.plugin_duration_s.labels(point, plugin_type, name).observe(
            self.timer() - started_s
        )

    def pre_request(self, decision: Decision) -> None:
        for weighted in self.scorers:
            weighted.scorer.pre_request(decision.request, decision.chosen)
        self._record_prefix_metrics()

    def response_complete(self, decision: Decision) -> None:
        for weighted in self.scorers:
            weighted.scorer.response_complete(decision.request, decision.chosen)

    def _record_prefix_metrics(self) -> None:
        for weighted in self.scorers:
            scorer = weighted.scorer
            if scorer.type == "prefix-cache-scorer":
                matched, total = scorer.last_match  # type: ignore[attr-defined]
                if total:
                    self.metrics.prefix_indexer_hit_ratio.observe(matched / total)
                self.metrics.prefix_indexer_size.set(scorer.index_size())  # type: ignore[attr-defined]
                return


def _decision_extra(extra: dict, slow: list[str]) -> dict:
    """Scorer details under `scorer_details`; the slow endpoints, when any, beside them."""
    out: dict = {"scorer_details": extra} if extra else {}
    if slow:
        out["slow_endpoints"] = slow
    return out
