"""Turn a `RequestOutcome` into a `RequestRecord`, and track reuse distance at send time.

Definitions (results/records.py states the record contract):
- TTFT = first token received - request sent; e2e = end ([DONE] or failure) - sent.
- ITL: one value per output token after the first. A chunk of k tokens that arrived `gap` after
  the previous chunk gives k values of gap/k; the k-1 extra tokens of the *first* chunk arrived
  with the first token and give k-1 zeros. So sum(ITL) = last arrival - first arrival.
- TPOT = (e2e - ttft) / (output_tokens - 1) (vLLM / inference-perf), None for < 2 tokens.
- output_tokens: usage.completion_tokens when reported, else the tokens counted in the stream.

Reuse (`ReuseTracker`): the reuse key of turn 0 is its prefix group; of turn k > 0 its own
conversation (whose previous turn holds the prefix and all history). Distance = what happened since
that key was last sent: seconds, and prompt tokens sent by all requests in between (both ends
excluded). reused_prefix_tokens: turn 0 -> prefix length if the group was sent before, else 0;
turn k > 0 -> the conversation's history (prefix + earlier questions and answers).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.loadgen.outcome import RequestOutcome
from kvbench.results.records import RequestRecord, RequestStatus

_KV_HIT_TIERS = ("gpu", "cpu", "remote")


@dataclass(slots=True, frozen=True)
class ReuseFacts:
    reused_prefix_tokens: int
    reuse_distance_tokens: int | None
    reuse_distance_s: float | None


class ReuseTracker:
    def __init__(self) -> None:
        self._prompt_tokens_sent = 0  # running total over all sends of the level
        self._last_send: dict[
            tuple[str, object], tuple[int, float]
        ] = {}  # key -> (total after, sent_s)

    def on_send(
        self,
        *,
        prefix_group: int | None,
        conversation_id: str,
        turn_index: int,
        prefix_tokens: int,
        history_tokens: int,
        prompt_tokens: int,
        sent_s: float,
    ) -> ReuseFacts:
        group_key = ("group", prefix_group) if prefix_group is not None else None
        conversation_key = ("conversation", conversation_id)
        reuse_key = conversation_key if turn_index > 0 else group_key
        last = self._last_send.get(reuse_key) if reuse_key is not None else None
        if last is None:
            facts = ReuseFacts(history_tokens if turn_index > 0 else 0, None, None)
        else:
            reused = history_tokens if turn_index > 0 else prefix_tokens
            facts = ReuseFacts(reused, self._prompt_tokens_sent - last[0], sent_s - last[1])
        self._prompt_tokens_sent += prompt_tokens
        stamp = (self._prompt_tokens_sent, sent_s)
        self._last_send[conversation_key] = stamp
        if group_key is not None:
            self._last_send[group_key] = stamp
        return facts


def itl_ms(chunk_arrivals: list[tuple[float, int]]) -> list[float]:
    if not chunk_arrivals:
        return []
    gaps: list[float] = [0.0] * (chunk_arrivals[0][1] - 1)
    previous = chunk_arrivals[0][0]
    for arrival, tokens in chunk_arrivals[1:]:
        share_ms = (arrival - previous) * 1000.0 / tokens
        gaps.extend([share_ms] * tokens)
        previous = arrival
    return gaps


def parse_kv_hits(header: str | None) -> dict[str, int]:
    """`gpu=N,cpu=N,remote=N` -> {"gpu": N, ...}; malformed parts are skipped."""
    hits: dict[str, int] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name in _KV_HIT_TIERS and value.strip().isdigit():
            hits[name] = int(value)
    return hits


def usage_kv_hits(usage: dict | None) -> dict[str, int]:
    """usage.kvbench: accepts {"gpu": N, ...} or {"gpu_hit_tokens": N, ...}."""
    block = (usage or {}).get("kvbench")
    hits: dict[str, int] = {}
    if isinstance(block, dict):
        for tier in _KV_HIT_TIERS:
            value = block.get(f"{tier}_hit_tokens", block.get(tier))
            if isinstance(value, int):
                hits[tier] = value
    return hits


def cached_tokens_of(usage: dict | None) -> int | None:
    details = (usage or {}).get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    return None


def fill_from_outcome(record: RequestRecord, outcome: RequestOutcome, run_t0_perf: float) -> None:
    """Copy timings, tokens, usage and header facts of `outcome` into `record` (in place)."""
    record.sent_s = outcome.sent_perf - run_t0_perf
    record.status = outcome.status
    record.error = outcome.error
    record.http_status = outcome.http_status
    end_perf = outcome.end_perf if outcome.end_perf is not None else outcome.sent_perf
    record.end_s = end_perf - run_t0_perf
    record.e2e_ms = (end_perf - outcome.sent_perf) * 1000.0
    first = outcome.first_token_perf
    if first is not None:
        record.first_token_s = first - run_t0_perf
        record.ttft_ms = (first - outcome.sent_perf) * 1000.0
    record.itl_ms = itl_ms(outcome.chunk_arrivals)
    usage = outcome.usage or {}
    completion = usage.get("completion_tokens")
    record.output_tokens = int(completion) if completion is not None else outcome.streamed_tokens
    if usage.get("prompt_tokens") is not None:
        record.prompt_tokens = int(usage["prompt_tokens"])
    if (
        record.ttft_ms is not None
        and record.output_tokens > 1
        and outcome.status == RequestStatus.OK.value
    ):
        record.tpot_ms = (record.e2e_ms - record.ttft_ms) / (record.output_tokens - 1)
    record.cached_tokens = cached_tokens_of(outcome.usage)
    _fill_attribution(record, outcome)


def _fill_attribution(record: RequestRecord, outcome: RequestOutcome) -> None:
    hits = usage_kv_hits(outcome.usage) or parse_kv_hits(outcome.headers.get("x-kvbench-kv-hits"))
    record.gpu_hit_tokens = hits.get("gpu")
    record.cpu_hit_tokens = hits.get("cpu")
    record.remote_hit_tokens = hits.get("remote")
    record.endpoint = outcome.headers.get("x-kvbench-endpoint") or outcome.headers.get(
        "x-gateway-destination-endpoint"
    )
    predicted = outcome.headers.get("x-kvbench-router-predicted-hit-tokens", "").strip()
    record.router_predicted_hit_tokens = int(predicted) if predicted.isdigit() else None
