"""Validity checks: could this experiment show a difference at all? Each result carries its evidence.

A check yields one `Check` per subject it applies to (a cell, a model, or the run): status
FLAG (the numbers below cannot be taken at face value), OK (checked, fine) or SKIP (the data the
check needs is absent; the report says so rather than pretending it passed).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvbench.analysis import check_names as names
from kvbench.analysis.load import (
    CellData,
    RunData,
    measure_requests,
)
from kvbench.analysis.metrics import measure_window_s, ok_requests
from kvbench.analysis.peaks import Peak
from kvbench.analysis.server import (
    KV_USAGE,
    gauge_stats,
    in_window,
    offload_bytes,
    step_lag_p99_s,
    tier_hits,
)
from kvbench.analysis.waves import CHECK_NAME as WAVES_CHECK
from kvbench.analysis.waves import MIN_EVENTS as WAVES_MIN_EVENTS
from kvbench.analysis.waves import wave_evidence


class CheckStatus(str, enum.Enum):
    FLAG = "FLAG"
    OK = "ok"
    SKIP = "skipped"


@dataclass(frozen=True)
class Thresholds:
    client_lag_p99_ms: float = 50.0  # dispatch or event-loop lag
    client_cpu_pct: float = 90.0  # client process CPU near one core's 100 %
    engine_step_lag_p99_ms: float = 50.0
    kv_usage_max_pct: float = 25.0  # below this at every level, the GPU KV cache never filled up
    min_ok_requests: int = 30
    max_error_rate: float = 0.01
    first_turn_slack_tokens: int = (
        16  # one block of cached tokens beyond the shared prefix is tolerated
    )
    min_reuse_fraction: float = (
        0.10  # below this, the workload gives any cache almost nothing to hit
    )


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    subject: str  # cell id, model, "run"
    evidence: str


def run_checks(
    run: RunData, peaks: list[Peak], thresholds: Thresholds = Thresholds()
) -> list[Check]:
    checks: list[Check] = []
    checks += check_failed_cells(run)
    for cell in run.cells:
        if not cell.ok:
            continue
        checks += [
            check_client_bound(cell, thresholds),
            check_emulator_bound(cell, thresholds),
            check_request_count(cell, thresholds),
            check_errors(cell, thresholds),
            check_warm_cache(cell, thresholds),
            check_reuse_opportunity(cell, thresholds),
            check_synchronized_load(cell),
        ]
        if run.routes_precisely(cell.base_scenario):
            checks.append(check_routing_can_matter(cell))
        checks += check_degradation(cell)
    checks += check_memory_pressure(run, thresholds)
    checks += [check_tier_exercised(p) for p in peaks if run.offloads(p.base_scenario) and p.cells]
    checks.append(check_cached_tokens_reported(run))
    return checks


def check_degradation(cell: CellData) -> list[Check]:
    from kvbench.analysis.degradation_checks import check_degradation as degradation_checks

    return degradation_checks(cell)


def check_synchronized_load(cell: CellData) -> Check:
    """Requests sent and finished in lock-step waves (analysis/waves.py says how it is told)."""
    found = wave_evidence(cell)
    if found is None:
        return Check(
            WAVES_CHECK, CheckStatus.SKIP, cell.cell_id, f"fewer than {WAVES_MIN_EVENTS} requests"
        )
    if not found.synchronized:
        return Check(WAVES_CHECK, CheckStatus.OK, cell.cell_id, found.text())
    return Check(
        WAVES_CHECK,
        CheckStatus.FLAG,
        cell.cell_id,
        found.text() + ": the streams ran in lock-step, so completions came in whole waves; "
        "stagger the streams' starts (load.stagger_s) or vary lengths or think times",
    )


def check_failed_cells(run: RunData) -> list[Check]:
    failed = [c for c in run.cells if not c.ok]
    if not failed:
        return [
            Check(names.CELLS_COMPLETED, CheckStatus.OK, "run", f"all {len(run.cells)} cells ok")
        ]
    detail = "; ".join(
        f"{c.cell_id}: {c.info.status.value}" + (f" ({c.info.error})" if c.info.error else "")
        for c in failed
    )
    return [
        Check(
            names.CELLS_COMPLETED,
            CheckStatus.FLAG,
            "run",
            f"{len(failed)} of {len(run.cells)} cells did not finish and are left out: {detail}",
        )
    ]


def _client_series(cell: CellData, metric: str, window) -> np.ndarray:
    rows = in_window(cell.system, window)
    if rows.empty:
        return np.array([])
    rows = rows[(rows["metric"] == metric) & (rows["source"].astype(str).str.startswith("client"))]
    return pd.to_numeric(rows["value"], errors="coerce").dropna().to_numpy(dtype=float)


def check_client_bound(cell: CellData, th: Thresholds) -> Check:
    window = measure_window_s(cell)
    evidence, flagged = [], False
    for metric in ("dispatch_lag_ms", "event_loop_lag_ms"):
        values = _client_series(cell, metric, window)
        if len(values):
            p99 = float(np.percentile(values, 99))
            evidence.append(f"{metric} p99 {p99:.1f} ms")
            flagged |= p99 > th.client_lag_p99_ms
    cpu = _client_series(cell, "cpu_percent", window)
    if len(cpu):
        p95 = float(np.percentile(cpu, 95))
        evidence.append(f"client CPU p95 {p95:.0f} %")
        flagged |= p95 >= th.client_cpu_pct
    if not evidence:
        return Check(
            names.CLIENT_KEEPS_UP, CheckStatus.SKIP, cell.cell_id, "no client lag / CPU samples"
        )
    status = CheckStatus.FLAG if flagged else CheckStatus.OK
    limits = f"(limits: lag p99 {th.client_lag_p99_ms:.0f} ms, CPU {th.client_cpu_pct:.0f} %)"
    return Check(
        names.CLIENT_KEEPS_UP,
        status,
        cell.cell_id,
        ("client-bound: " if flagged else "") + ", ".join(evidence) + f" {limits}",
    )


def check_emulator_bound(cell: CellData, th: Thresholds) -> Check:
    window = measure_window_s(cell)
    p99_ms = step_lag_p99_s(cell, window) * 1000
    if math.isnan(p99_ms):
        return Check(
            names.EMULATOR_KEEPS_UP,
            CheckStatus.SKIP,
            cell.cell_id,
            "no kvbench:engine_step_lag_seconds samples",
        )
    flagged = p99_ms > th.engine_step_lag_p99_ms
    return Check(
        names.EMULATOR_KEEPS_UP,
        CheckStatus.FLAG if flagged else CheckStatus.OK,
        cell.cell_id,
        ("emulator-bound: " if flagged else "")
        + f"engine step lag p99 {p99_ms:.1f} ms (limit {th.engine_step_lag_p99_ms:.0f} ms)",
    )


def check_request_count(cell: CellData, th: Thresholds) -> Check:
    n_ok = len(ok_requests(measure_requests(cell)))
    flagged = n_ok < th.min_ok_requests
    return Check(
        names.ENOUGH_REQUESTS,
        CheckStatus.FLAG if flagged else CheckStatus.OK,
        cell.cell_id,
        f"{n_ok} successful measure-phase requests (minimum {th.min_ok_requests})",
    )


def check_errors(cell: CellData, th: Thresholds) -> Check:
    measured = measure_requests(cell)
    if measured.empty:
        return Check(names.ERROR_RATE, CheckStatus.SKIP, cell.cell_id, "no measure-phase requests")
    failed = measured[measured["status"] != "ok"]
    rate = len(failed) / len(measured)
    kinds = ", ".join(f"{k}: {v}" for k, v in failed["status"].value_counts().items())
    return Check(
        names.ERROR_RATE,
        CheckStatus.FLAG if rate > th.max_error_rate else CheckStatus.OK,
        cell.cell_id,
        f"{len(failed)}/{len(measured)} failed ({rate:.1%}; limit {th.max_error_rate:.0%})"
        + (f" [{kinds}]" if kinds else ""),
    )


def check_warm_cache(cell: CellData, th: Thresholds) -> Check:
    protocol = cell.info.cache_protocol
    evidence, flagged = [], False
    if protocol is not None and (protocol.reset is None or not protocol.reset.components):
        evidence.append("cache_protocol: no prefix-cache reset before the cell")
        flagged = True
    unexplained = unexplained_first_turn_hits(cell.requests)
    if unexplained is not None:
        bad = unexplained[unexplained["excess_tokens"] > th.first_turn_slack_tokens]
        text = (
            f"{len(bad)}/{len(unexplained)} first-turn requests cached more than earlier requests of the cell "
            "explain (shared prefix of their group, or an earlier pass of the same conversation)"
        )
        if len(bad):
            worst = bad.loc[bad["excess_tokens"].idxmax()]
            text += (
                f" (max excess {int(worst['excess_tokens'])} tokens, e.g. conversation {worst['conversation_id']}: "
                f"{int(worst['cached_tokens'])} cached, {int(worst['explained_tokens'])} explained)"
            )
        evidence.append(text)
        flagged |= len(bad) > 0
    if not evidence:
        return Check(
            names.COLD_START,
            CheckStatus.SKIP,
            cell.cell_id,
            "no cache_protocol record and no first-turn cached tokens",
        )
    return Check(
        names.COLD_START,
        CheckStatus.FLAG if flagged else CheckStatus.OK,
        cell.cell_id,
        ("warm-cache contamination: " if flagged else "") + "; ".join(evidence),
    )


def _base_conversation(conversation_id: pd.Series) -> pd.Series:
    """`c12~c2` (third pass of a recycled conversation) -> `c12`: the passes send identical turn-0 prompts."""
    return conversation_id.astype(str).str.replace(r"~c\d+$", "", regex=True)


def _earliest_other_sent_s(keys: pd.Series, sent_s: pd.Series) -> pd.Series:
    """Per row: the earliest sent_s among the *other* rows with the same key (inf when there is none)."""
    order = (
        pd.DataFrame({"key": keys, "sent": sent_s})
        .dropna(subset=["key"])
        .sort_values(["key", "sent"], kind="stable")
    )
    by_key = order.groupby("key")["sent"]
    first = by_key.transform("first")
    second = by_key.transform(lambda s: s.iloc[1] if len(s) > 1 else np.inf)
    is_first = by_key.cumcount() == 0
    other = pd.Series(np.where(is_first, second, first), index=order.index, dtype=float)
    return other.reindex(keys.index).fillna(np.inf)


def unexplained_first_turn_hits(requests: pd.DataFrame) -> pd.DataFrame | None:
    """Cached tokens of each successful turn-0 request beyond what earlier requests of the same cell explain.

    A request R can legitimately hit blocks computed by any request of the cell sent before R was
    served (R's first token; the engine schedules out of send order, so a request sent a little
    later can prefill first). Such an earlier request explains:
    - the group's shared prefix, when it belongs to R's prefix group (group prefix length = the
      largest `reused_prefix_tokens` recorded for a turn-0 request of the group in the cell, or
      the prompt of the group's prime request when the cell was primed);
    - all of R's prompt, when it is an earlier pass of the same conversation (`<id>~c<pass>`
      resends identical turn-0 token ids);
    and R's own `reused_prefix_tokens` (the workload's statement at send time) is explained too.
    All phases and statuses count as senders (a failed or warm-up request may still have been
    prefilled). None when no turn-0 request reports cached tokens.
    """
    if requests.empty:
        return None
    frame = requests.assign(
        sent=pd.to_numeric(requests["sent_s"], errors="coerce"),
        reused=pd.to_numeric(requests["reused_prefix_tokens"], errors="coerce").fillna(0),
        group=pd.to_numeric(requests["prefix_group"], errors="coerce"),
        base=_base_conversation(requests["conversation_id"]),
    )
    first_turn = (
        (frame["turn_index"] == 0) & (frame["status"] == "ok") & frame["cached_tokens"].notna()
    )
    if not first_turn.any():
        return None
    served = (
        pd.to_numeric(frame["first_token_s"], errors="coerce")
        .fillna(pd.to_numeric(frame["end_s"], errors="coerce"))
        .fillna(np.inf)
    )
    group_prefix = frame[frame["turn_index"] == 0].groupby("group")["reused"].max()
    if (
        "phase" in frame
    ):  # a prime request (the cache-state protocol) sends exactly its group's prefix
        primes = frame[frame["phase"] == "prime"]
        primed = (
            pd.to_numeric(primes["prompt_tokens"], errors="coerce").groupby(primes["group"]).max()
        )
        group_prefix = pd.concat([group_prefix, primed], axis=1).max(axis=1)
    group_earlier = frame["group"].notna() & (
        _earliest_other_sent_s(frame["group"], frame["sent"]) < served
    )
    pass_earlier = _earliest_other_sent_s(frame["base"], frame["sent"]) < served
    explained = frame["reused"].copy()
    explained = explained.where(
        ~group_earlier, np.maximum(explained, frame["group"].map(group_prefix).fillna(0))
    )
    explained = explained.where(
        ~pass_earlier, np.maximum(explained, pd.to_numeric(frame["prompt_tokens"], errors="coerce"))
    )
    out = frame.loc[first_turn, ["request_id", "conversation_id", "prefix_group", "sent_s"]].copy()
    out["cached_tokens"] = pd.to_numeric(frame.loc[first_turn, "cached_tokens"])
    out["explained_tokens"] = explained[first_turn]
    out["excess_tokens"] = out["cached_tokens"] - out["explained_tokens"]
    return out.reset_index(drop=True)


def check_reuse_opportunity(cell: CellData, th: Thresholds) -> Check:
    """Could any cache configuration matter? Only requests that resend tokens sent earlier (a later
    turn of a conversation, or a shared prefix already sent) can hit a cache. The seed evaluation's
    trap: 800 distinct 10k-token prefixes and a few dozen completed requests per level, so almost
    every measured request was a first turn on a prefix never seen before."""
    measured = ok_requests(measure_requests(cell))
    if measured.empty:
        return Check(
            names.REUSE_OPPORTUNITY,
            CheckStatus.SKIP,
            cell.cell_id,
            "no successful measure-phase requests",
        )
    later_turn = pd.to_numeric(measured["turn_index"], errors="coerce").fillna(0) > 0
    reused_prefix = pd.to_numeric(measured["reused_prefix_tokens"], errors="coerce").fillna(0) > 0
    fraction = float((later_turn | reused_prefix).mean())
    evidence = (
        f"{fraction:.0%} of {len(measured)} measured requests resend tokens sent earlier "
        f"(a later turn or an already-sent shared prefix){_working_set_text(cell)}"
    )
    if fraction < th.min_reuse_fraction:
        return Check(
            names.REUSE_OPPORTUNITY,
            CheckStatus.FLAG,
            cell.cell_id,
            f"the workload offers almost no reuse: {evidence}; no cache or routing configuration can "
            "differ here (run longer, or use fewer prefixes / more turns)",
        )
    return Check(names.REUSE_OPPORTUNITY, CheckStatus.OK, cell.cell_id, evidence)


def _working_set_text(cell: CellData) -> str:
    capacity = cell.info.workload.capacity if cell.info.workload else None
    working_set = capacity.working_set_tokens if capacity else None
    gpu = capacity.gpu_kv_capacity_tokens if capacity else None
    if not working_set or not gpu:
        return ""
    return f"; workload working set {working_set:,} tokens = {working_set / gpu:.1f}x the GPU KV capacity ({gpu:,})"


def check_routing_can_matter(cell: CellData) -> Check:
    endpoints = (
        {e for e in cell.requests["endpoint"].dropna().unique()}
        if not cell.requests.empty
        else set()
    )
    engines = (
        {s for s in cell.server["source"].dropna().unique() if s != "router"}
        if not cell.server.empty
        else set()
    )
    count = max(len(endpoints), len(engines))
    if count == 0:
        return Check(
            names.ROUTING_CAN_MATTER,
            CheckStatus.SKIP,
            cell.cell_id,
            "no endpoint per request and no per-engine metrics",
        )
    flagged = count <= 1
    return Check(
        names.ROUTING_CAN_MATTER,
        CheckStatus.FLAG if flagged else CheckStatus.OK,
        cell.cell_id,
        f"{count} endpoint(s) served requests"
        + (": a router with one endpoint cannot route" if flagged else ""),
    )


def check_memory_pressure(run: RunData, th: Thresholds) -> list[Check]:
    checks = []
    for model in run.models():
        cells = [c for c in run.cells if c.info.model == model and c.ok]
        maxima = []
        for cell in cells:
            _, kv_max = gauge_stats(cell.server, KV_USAGE, measure_window_s(cell))
            if not math.isnan(kv_max):
                maxima.append(kv_max * 100)
        if not maxima:
            checks.append(
                Check(names.MEMORY_PRESSURE, CheckStatus.SKIP, model, f"no {KV_USAGE} samples")
            )
            continue
        peak_pct = max(maxima)
        flagged = peak_pct < th.kv_usage_max_pct
        checks.append(
            Check(
                names.MEMORY_PRESSURE,
                CheckStatus.FLAG if flagged else CheckStatus.OK,
                model,
                (
                    f"no memory pressure: GPU KV usage never exceeded {peak_pct:.2f} % in {len(maxima)} cells "
                    f"(limit {th.kv_usage_max_pct:.0f} %); running requests never filled the GPU KV cache, so "
                    "offload can help only through prefix reuse beyond GPU capacity (see tier check)"
                )
                if flagged
                else f"GPU KV usage reached {peak_pct:.1f} % (>= {th.kv_usage_max_pct:.0f} %)",
            )
        )
    return checks


def check_tier_exercised(peak: Peak) -> Check:
    cell = peak.cells[0]
    window = measure_window_s(cell)
    tiers = tier_hits(cell, window)
    moved = offload_bytes(cell, window)
    subject = f"{peak.model_short} / {peak.scenario} @ {peak.level:g}"
    cpu, remote = tiers["cpu_hit_tokens"], tiers["remote_hit_tokens"]
    loaded = moved["offload_cpu_to_gpu_bytes"]
    known = [v for v in (cpu, remote, loaded) if not math.isnan(v)]
    if not known:
        return Check(
            names.OFFLOAD_TIER_EXERCISED,
            CheckStatus.SKIP,
            subject,
            "no tier attribution and no offload byte counters",
        )
    flagged = sum(known) == 0
    parts = [
        f"CPU hits {cpu:.0f} tokens" if not math.isnan(cpu) else "CPU hits n/a",
        f"remote hits {remote:.0f} tokens" if not math.isnan(remote) else "remote hits n/a",
        f"CPU->GPU {loaded / 1e6:.1f} MB" if not math.isnan(loaded) else "CPU->GPU bytes n/a",
    ]
    stored = moved["offload_gpu_to_cpu_bytes"]
    if not math.isnan(stored):
        parts.append(f"GPU->CPU {stored / 1e6:.1f} MB")
    return Check(
        names.OFFLOAD_TIER_EXERCISED,
        CheckStatus.FLAG if flagged else CheckStatus.OK,
        subject,
        ("tier never exercised: " if flagged else "")
        + ", ".join(parts)
        + f" (source: {tiers['tier_source']})",
    )


def check_cached_tokens_reported(run: RunData) -> Check:
    reported = total = 0
    for cell in run.cells:
        ok = ok_requests(cell.requests)
        total += len(ok)
        reported += int(ok["cached_tokens"].notna().sum()) if len(ok) else 0
    if total == 0:
        return Check(
            names.CACHED_TOKENS_REPORTED, CheckStatus.SKIP, "run", "no successful requests"
        )
    if reported == 0:
        return Check(
            names.CACHED_TOKENS_REPORTED,
            CheckStatus.FLAG,
            "run",
            f"none of {total} responses carried usage.prompt_tokens_details.cached_tokens "
            "(vLLM reports it only with --enable-prompt-tokens-details); client-side hit rates are unavailable",
        )
    return Check(
        names.CACHED_TOKENS_REPORTED,
        CheckStatus.OK,
        "run",
        f"{reported}/{total} responses reported cached tokens",
    )
