"""From probe measurements (calibrate/probe.py) to the cost model's factors (CostParams).

Each factor is fitted against the cost model's own prediction for the probe's operating points,
over every model probed (one hardware profile serves every model size):
- decode (ITL at batch B <= DECODE_FIT_MAX_BATCH, context C, no connector):
  `weight_memory_efficiency`, `kv_memory_efficiency`, `layer_latency_s` (what a step's GPU time
  holds beyond its bytes, charged per layer: probes of models of different weight sizes tell it
  apart from the weight term), `step_overhead_s`, `per_request_overhead_s`, with `cpu_overlap` on
  (vLLM's async scheduling: a step takes max(GPU work, CPU work));
- prefill (one request at a time, the engine's own prefill time from
  vllm:request_prefill_time_seconds): `linear_efficiency`, `attention_efficiency`,
  `eager_step_overhead_s` and `eager_step_gpu_s` (the CPU and GPU costs of steps beyond the
  CUDA-graph capture size), with the first token's way back to the API server as a fitted
  offset that the request delay takes in;
- outside the engine (`fit_request_delay`, the first estimate): what lone requests spend beyond
  queue + the fitted prefill step, as a line in the prompt length (`request_overhead_s` +
  `request_overhead_per_prompt_token_s` x prompt tokens), and from the closed-loop throughput
  point the TTFT still unexplained there per output token/s (`frontend_lag_s_per_output_tok_s`).
  That estimate overstates TTFT (on the H100 probes the time was 74 and 78 ms at 64 streams for
  0.6B and 8B, whose output rates differ 2.8x), so `kvbench calibrate` replaces these terms by
  replaying the probe on the simulated target (replay_fit.py: the lone line, the prefill-start
  costs and a per-stream lag);
- the offload connector (the same points with and without it): `connector_step_overhead_s` from
  low-batch ITL, `connector_prefill_overhead_s` and `store_stall_bytes_per_s` from prefill time
  against the bytes stored, and the host link from vllm:kv_offload_load_bytes / _load_time.
Grid searches, minimising the mean squared relative error; each fit reports its error.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kvbench.emulator.engine.cost_model import CostModel, CostParams, StepCost
from kvbench.emulator.engine.scheduler import StepWork
from kvbench.spec.catalogs import HardwareProfile, ModelProfile, get_model

DECODE_SKIP_TOKENS = 4  # the first gaps of a stream overlap other requests' prefills
# Decode points of more running requests are left out of the fit: on the H200 (vLLM 0.26) a step
# of 256 decodes took 18-22 ms at every model size (0.6B, 8B, 14B), twice what the same line
# through batch <= 128 gives: CPU work (input preparation, the sampler over 256 sequences) that
# grows faster than one per-request term. The cells keep at most ~100 requests running.
DECODE_FIT_MAX_BATCH = 128


@dataclass
class ProbeRun:
    """One probe of one server (a model with or without a connector)."""

    model: str
    scenario: str
    has_cpu_tier: bool
    points: list[dict[str, Any]]
    server_version: str | None = None
    gpu_kv_capacity_tokens: int | None = None  # the probed server's, as its /metrics said
    block_size: int = 16


@dataclass(frozen=True)
class DecodePoint:
    model: str
    batch: int
    context_tokens: int
    itl_s: float


@dataclass(frozen=True)
class PrefillPoint:
    model: str
    prompt_tokens: int
    prefill_s: float  # engine side: scheduled -> first token
    ttft_s: float  # client side
    queue_s: float
    output_tokens: int = 16  # the point's max_tokens


@dataclass
class FitReport:
    params: CostParams
    host_link_bytes_per_s: float | None
    errors: dict[str, float] = field(default_factory=dict)  # fit -> mean |relative error|
    points: dict[str, int] = field(default_factory=dict)
    vllm_version: str | None = None


def read_probe(path: Path) -> ProbeRun:
    opener = gzip.open if path.suffix == ".gz" else open
    header: dict[str, Any] = {}
    points: list[dict[str, Any]] = []
    with opener(path, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            if record["kind"] == "server":
                header = record
            elif not record.get("skipped"):
                points.append(record)
    details = header.get("details") or {}
    return ProbeRun(
        model=header["model"],
        scenario=header["scenario"],
        has_cpu_tier=bool(header["server"]["has_cpu_tier"]),
        points=points,
        server_version=details.get("server_version") or details.get("vllm_version"),
        gpu_kv_capacity_tokens=header["server"].get("gpu_kv_capacity_tokens"),
        block_size=header["server"].get("block_size") or 16,
    )


def _mean(deltas: dict[str, float], family: str) -> float:
    count = deltas.get(f"{family}_count", 0.0)
    return deltas.get(f"{family}_sum", 0.0) / count if count else 0.0


def decode_points(run: ProbeRun) -> list[DecodePoint]:
    found = []
    for point in run.points:
        if point["phase"] != "decode":
            continue
        gaps = [
            later - earlier
            for request in point["requests"]
            if request["status"] == "ok"
            for earlier, later in itertools.pairwise(request["token_s"][DECODE_SKIP_TOKENS:])
            if later > earlier
        ]
        if gaps:
            params = point["params"]
            found.append(
                DecodePoint(
                    run.model, params["batch"], params["prompt_tokens"], statistics.median(gaps)
                )
            )
    return found


def _answered(run: ProbeRun, phase: str) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The run's points of `phase` with their requests that got a first token (points without
    any are left out)."""
    for point in run.points:
        if point["phase"] != phase:
            continue
        ok = [r for r in point["requests"] if r["status"] == "ok" and r["first_token_s"]]
        if ok:
            yield point, ok


def prefill_points(run: ProbeRun) -> list[PrefillPoint]:
    found = []
    for point, ok in _answered(run, "prefill"):
        deltas = point["server_deltas"]
        found.append(
            PrefillPoint(
                run.model,
                point["params"]["prompt_tokens"],
                _mean(deltas, "vllm:request_prefill_time_seconds"),
                statistics.median(r["first_token_s"] - r["sent_s"] for r in ok),
                _mean(deltas, "vllm:request_queue_time_seconds"),
                int(ok[0]["max_tokens"]),
            )
        )
    return found


def _decode_work(batch: int, context: int) -> StepWork:
    tokens = context + DECODE_SKIP_TOKENS * 4  # mid-stream: a few dozen tokens past the prompt
    return StepWork(
        num_reqs=batch,
        num_tokens=batch,
        num_sampled=batch,
        attended_pairs=batch * tokens,
        kv_tokens_read=batch * tokens,
        num_kv_tokens_written=batch,
    )


def _prefill_work(prompt_tokens: int) -> StepWork:
    return StepWork(
        num_reqs=1,
        num_tokens=prompt_tokens,
        num_sampled=1,
        attended_pairs=prompt_tokens * (prompt_tokens + 1) // 2,
        kv_tokens_read=prompt_tokens,
        num_kv_tokens_written=prompt_tokens,
        num_prefill_starts=1,
    )


def _rel_error(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.mean(((predicted - measured) / measured) ** 2, axis=-1)


def fit_decode(
    points: list[DecodePoint], hardware: HardwareProfile, base: CostParams
) -> tuple[CostParams, float]:
    """The decode terms, fitted over the points of at most DECODE_FIT_MAX_BATCH requests.

    A step's GPU time is linear in the layer latency (gpu_s grows by num_layers x latency), so
    for each pair of memory efficiencies one array spans latency x step overhead x per-request
    overhead x points. The grids are coarse, then refined once around the best cell.
    """
    kept = [p for p in points if p.batch <= DECODE_FIT_MAX_BATCH] or points
    search = _DecodeSearch(kept, hardware, base)
    best = search.best(
        weight_effs=np.linspace(0.5, 1.0, 11),
        kv_effs=np.linspace(0.3, 1.0, 8),
        layer_latencies_s=np.linspace(0.0, 80e-6, 21),
        overheads_s=np.linspace(0.0, 4e-3, 41),
        per_request_s=np.linspace(0.0, 80e-6, 41),
    )
    best = search.best(
        weight_effs=_around(best.weight_memory_efficiency, 0.05, 0.01, 0.3, 1.2),
        kv_effs=_around(best.kv_memory_efficiency, 0.1, 0.02, 0.1, 1.2),
        layer_latencies_s=_around(best.layer_latency_s, 4e-6, 1e-6, 0.0, 1.0),
        overheads_s=_around(best.step_overhead_s, 0.1e-3, 0.02e-3, 0.0, 1.0),
        per_request_s=_around(best.per_request_overhead_s, 2e-6, 0.5e-6, 0.0, 1.0),
    )
    return best, _mean_abs_error(best, hardware, kept)


def _around(center: float, half_span: float, step: float, low: float, high: float) -> np.ndarray:
    count = int(round(2 * half_span / step)) + 1
    grid = np.linspace(center - half_span, center + half_span, count)
    return grid[(grid >= low) & (grid <= high)]


class _DecodeSearch:
    """Grid search of fit_decode: minimises the mean squared relative ITL error."""

    def __init__(
        self, points: list[DecodePoint], hardware: HardwareProfile, base: CostParams
    ) -> None:
        self.points = points
        self.hardware = hardware
        self.base = dataclasses.replace(base, cpu_overlap=True, layer_latency_s=0.0)
        self.measured = np.array([p.itl_s for p in points])
        self.batches = np.array([p.batch for p in points], dtype=float)
        self.layers = np.array([get_model(p.model).num_layers for p in points], dtype=float)

    def _gpu_s(self, trial: CostParams) -> np.ndarray:
        return np.array(
            [
                CostModel(get_model(p.model), self.hardware, 1, trial)
                .step_cost(_decode_work(p.batch, p.context_tokens))
                .gpu_s
                for p in self.points
            ]
        )

    def best(
        self,
        weight_effs: np.ndarray,
        kv_effs: np.ndarray,
        layer_latencies_s: np.ndarray,
        overheads_s: np.ndarray,
        per_request_s: np.ndarray,
    ) -> CostParams:
        latency = layer_latencies_s[:, None, None, None]
        overhead = overheads_s[None, :, None, None]
        per_request = per_request_s[None, None, :, None]
        cpu = overhead + per_request * self.batches  # (1, O, R, N)
        found: tuple[float, CostParams] | None = None
        for weight_eff, kv_eff in itertools.product(weight_effs, kv_effs):
            trial = dataclasses.replace(
                self.base,
                weight_memory_efficiency=float(weight_eff),
                kv_memory_efficiency=float(kv_eff),
            )
            gpu = self._gpu_s(trial) + latency * self.layers  # (Z, 1, 1, N)
            errors = _rel_error(np.maximum(gpu, cpu), self.measured)
            z, o, r = np.unravel_index(np.argmin(errors), errors.shape)
            if found is None or errors[z, o, r] < found[0]:
                found = (
                    float(errors[z, o, r]),
                    dataclasses.replace(
                        trial,
                        layer_latency_s=float(layer_latencies_s[z]),
                        step_overhead_s=float(overheads_s[o]),
                        per_request_overhead_s=float(per_request_s[r]),
                    ),
                )
        assert found is not None
        return found[1]


def _mean_abs_error(params: CostParams, hardware: HardwareProfile, points: list[DecodePoint]):
    errors = []
    for p in points:
        cost = CostModel(get_model(p.model), hardware, 1, params)
        errors.append(
            abs(cost.step_duration_s(_decode_work(p.batch, p.context_tokens)) / p.itl_s - 1)
        )
    return float(np.mean(errors))


EAGER_CPU_GRID_S = np.linspace(0.0, 15e-3, 31)
EAGER_GPU_GRID_S = np.linspace(0.0, 16e-3, 17)


def fit_prefill(
    points: list[PrefillPoint], hardware: HardwareProfile, params: CostParams
) -> tuple[CostParams, float]:
    """`linear_efficiency`, `attention_efficiency`, `eager_step_overhead_s` and `eager_step_gpu_s`
    from lone prefills.

    vLLM's prefill time runs from the request's scheduling to its first token reaching the API
    server, so besides the step it holds the output's way back (IPC, the output processor): a
    constant per request that is no engine work. It is fitted here as an offset and then left out
    of the profile: the request delay (replay_fit.py) measures what lone requests spend beyond
    the modelled step, which takes it in. Prompts above the CUDA-graph capture size tell the eager
    step's costs apart: its CPU launch work shows where the kernels are short (a small model),
    its GPU time at every size. Per pair of efficiencies, the step's GPU and CPU parts are
    computed once; the eager terms and the offset are then arrays over those parts.
    """
    measured = np.array([p.prefill_s for p in points])
    offsets = np.linspace(0.0, 30e-3, 121)
    best: tuple[float, CostParams, float] | None = None  # (error, factors, offset_s)
    for linear_eff, attn_eff in itertools.product(
        np.linspace(0.3, 1.2, 19), np.linspace(0.2, 1.0, 9)
    ):
        trial = dataclasses.replace(
            params,
            linear_efficiency=float(linear_eff),
            attention_efficiency=float(attn_eff),
            eager_step_overhead_s=0.0,
            eager_step_gpu_s=0.0,
            prefill_request_overhead_s=0.0,
        )
        costs = [_lone_prefill_cost(trial, hardware, p.model, p.prompt_tokens) for p in points]
        gpu = np.array([c.gpu_s for c in costs])
        cpu = np.array([c.overhead_s for c in costs])
        eager = np.array([p.prompt_tokens > trial.cudagraph_max_tokens for p in points], float)
        # axes: eager CPU (C), eager GPU (G), offset (O), point (N)
        cpu_s = cpu + EAGER_CPU_GRID_S[:, None, None, None] * eager
        gpu_s = gpu + EAGER_GPU_GRID_S[None, :, None, None] * eager
        step_s = np.maximum(gpu_s, cpu_s) if trial.cpu_overlap else gpu_s + cpu_s
        errors = _rel_error(step_s + offsets[None, None, :, None], measured)
        c, g, o = np.unravel_index(np.argmin(errors), errors.shape)
        if best is None or errors[c, g, o] < best[0]:
            fitted = dataclasses.replace(
                trial,
                eager_step_overhead_s=float(EAGER_CPU_GRID_S[c]),
                eager_step_gpu_s=float(EAGER_GPU_GRID_S[g]),
            )
            best = (float(errors[c, g, o]), fitted, float(offsets[o]))
    assert best is not None
    _, fitted, offset_s = best
    error = float(
        np.mean(
            [
                abs(
                    (_lone_prefill_s(fitted, hardware, p.model, p.prompt_tokens) + offset_s)
                    / p.prefill_s
                    - 1
                )
                for p in points
            ]
        )
    )
    return fitted, error


@dataclass(frozen=True)
class RequestDelayFit:
    """Arrival -> schedulable, as CostModel.request_delay_s models it."""

    fixed_s: float
    per_prompt_token_s: float
    lag_s_per_output_tok_s: float = 0.0


@dataclass(frozen=True)
class ThroughputPoint:
    """A closed loop of the probe at one concurrency: unique prompts (phase `throughput`), or each
    a cached shared prefix plus new tokens (`throughput_cached`)."""

    model: str
    prompt_tokens: int
    ttft_s: float  # client side, mean over the point's requests
    queue_s: float  # engine side, mean
    prefill_s: float  # engine side, mean (scheduled -> first token seen by the API server)
    output_tok_s: float  # generation tokens / the point's duration
    concurrency: int = 64
    output_tokens: int = 128
    send_window_s: float = 8.0  # streams sent new requests this long (the latest send, if unsaid)
    cached_prefix_tokens: int = 0  # of prompt_tokens: one of `prefixes` shared, cached prefixes
    prefixes: int = 0
    tpot_p50_s: float | None = None  # median over requests of (end - first token) / (tokens - 1)


def tpot_s(first_token_s: float, end_s: float, output_tokens: int) -> float | None:
    """Time per output token after the first (None for a one-token answer)."""
    return (end_s - first_token_s) / (output_tokens - 1) if output_tokens > 1 else None


def median_tpot_s(tpots_s: list[float | None]) -> float | None:
    known = [t for t in tpots_s if t is not None]
    return statistics.median(known) if known else None


def throughput_points(run: ProbeRun, phase: str = "throughput") -> list[ThroughputPoint]:
    found = []
    for point, ok in _answered(run, phase):
        if point["duration_s"] <= 0:
            continue
        deltas = point["server_deltas"]
        params = point["params"]
        found.append(
            ThroughputPoint(
                run.model,
                params["prompt_tokens"],
                statistics.fmean(r["first_token_s"] - r["sent_s"] for r in ok),
                _mean(deltas, "vllm:request_queue_time_seconds"),
                _mean(deltas, "vllm:request_prefill_time_seconds"),
                deltas.get("vllm:generation_tokens_total", 0.0) / point["duration_s"],
                int(params.get("concurrency", len(ok))),
                int(params.get("output_tokens", ok[0]["max_tokens"])),
                float(params.get("send_window_s") or max(r["sent_s"] for r in point["requests"])),
                int(params.get("cached_prefix_tokens", 0)),
                int(params.get("prefixes", 0)),
                median_tpot_s(
                    [
                        tpot_s(r["first_token_s"], r["end_s"], len(r["token_s"]) or r["max_tokens"])
                        for r in ok
                        if r["end_s"] is not None
                    ]
                ),
            )
        )
    return found


def _lone_prefill_s(
    params: CostParams, hardware: HardwareProfile, model: str, prompt: int
) -> float:
    return _lone_prefill_cost(params, hardware, model, prompt).duration_s


def _lone_prefill_cost(
    params: CostParams, hardware: HardwareProfile, model: str, prompt: int
) -> StepCost:
    return CostModel(get_model(model), hardware, 1, params).step_cost(_prefill_work(prompt))


def fit_request_delay(
    prefill: list[PrefillPoint],
    throughput: list[ThroughputPoint],
    hardware: HardwareProfile,
    params: CostParams,
) -> RequestDelayFit:
    """Least squares line of the lone requests' unexplained TTFT against prompt length (both terms
    kept >= 0), then the lag from the throughput points (median over them, >= 0)."""
    if not prefill:
        return RequestDelayFit(0.0, 0.0)
    prompts = np.array([p.prompt_tokens for p in prefill], dtype=float)
    residual_s = np.array(
        [
            p.ttft_s - p.queue_s - _lone_prefill_s(params, hardware, p.model, p.prompt_tokens)
            for p in prefill
        ]
    )
    flat = (0.0, float(np.median(residual_s)))  # no slope: one prompt length, or a falling line
    slope, intercept = (
        np.polyfit(prompts, residual_s, 1) if len(set(prompts.tolist())) > 1 else flat
    )
    if slope < 0:
        slope, intercept = flat
    fixed_s, per_token_s = max(0.0, float(intercept)), float(slope)
    lags = []
    for point in throughput:
        if point.output_tok_s <= 0:
            continue
        outside_s = point.ttft_s - point.queue_s - point.prefill_s
        lone_outside_s = fixed_s + per_token_s * point.prompt_tokens
        lags.append((outside_s - lone_outside_s) / point.output_tok_s)
    lag = max(0.0, statistics.median(lags)) if lags else 0.0
    return RequestDelayFit(fixed_s, per_token_s, lag)


def fit_connector(
    plain: list[ProbeRun], offload: list[ProbeRun], params: CostParams
) -> tuple[CostParams, float | None, int]:
    """Connector factors from (no-connector, connector) probes of the same models."""
    step_deltas: list[float] = []
    rows: list[tuple[float, float]] = []  # (stored bytes, extra prefill seconds)
    for with_tier in offload:
        base = next((run for run in plain if run.model == with_tier.model), None)
        if base is None:
            continue
        before = {(p.batch, p.context_tokens): p.itl_s for p in decode_points(base)}
        for point in decode_points(with_tier):
            key = (point.batch, point.context_tokens)
            if point.batch <= 4 and key in before:
                step_deltas.append(point.itl_s - before[key])
        before_prefill = {p.prompt_tokens: p.prefill_s for p in prefill_points(base)}
        per_token = get_model(with_tier.model).kv_bytes_per_token
        for prefill in prefill_points(with_tier):
            if prefill.prompt_tokens in before_prefill:
                extra = prefill.prefill_s - before_prefill[prefill.prompt_tokens]
                rows.append((prefill.prompt_tokens * per_token, extra))
    updates: dict[str, float] = {}
    if step_deltas:
        updates["connector_step_overhead_s"] = max(0.0, statistics.median(step_deltas))
    if len(rows) >= 2:
        stored_bytes = np.array([r[0] for r in rows])
        extra_s = np.array([r[1] for r in rows])
        slope, intercept = np.polyfit(stored_bytes, extra_s, 1)
        updates["connector_prefill_overhead_s"] = max(0.0, float(intercept))
        updates["store_stall_bytes_per_s"] = float(1.0 / slope) if slope > 0 else 0.0
    fitted = dataclasses.replace(
        params,
        connector_step_overhead_s=updates.get(
            "connector_step_overhead_s", params.connector_step_overhead_s
        ),
        connector_prefill_overhead_s=updates.get(
            "connector_prefill_overhead_s", params.connector_prefill_overhead_s
        ),
        store_stall_bytes_per_s=updates.get(
            "store_stall_bytes_per_s", params.store_stall_bytes_per_s
        ),
    )
    return fitted, _host_link(offload), len(rows)


def _host_link(offload: list[ProbeRun]) -> float | None:
    loaded = seconds = 0.0
    for run in offload:
        for point in run.points:
            deltas = point["server_deltas"]
            loaded += deltas.get("vllm:kv_offload_load_bytes_total", 0.0)
            seconds += deltas.get("vllm:kv_offload_load_time_total", 0.0)
    return loaded / seconds if seconds > 0 and loaded > 0 else None


def fit_profile(runs: list[ProbeRun], hardware: HardwareProfile) -> FitReport:
    plain = [run for run in runs if not run.has_cpu_tier]
    offload = [run for run in runs if run.has_cpu_tier]
    decode = [p for run in plain for p in decode_points(run)]
    prefill = [p for run in plain for p in prefill_points(run)]
    if not decode or not prefill:
        from kvbench.errors import UserError

        raise UserError(
            "calibrate: the probes hold no decode or prefill points without a connector"
        )
    params, decode_error = fit_decode(decode, hardware, CostParams())
    params, prefill_error = fit_prefill(prefill, hardware, params)
    throughput = [p for run in plain for p in throughput_points(run)]
    delay = fit_request_delay(prefill, throughput, hardware, params)
    params = dataclasses.replace(
        params,
        request_overhead_s=delay.fixed_s,
        request_overhead_per_prompt_token_s=delay.per_prompt_token_s,
        frontend_lag_s_per_output_tok_s=delay.lag_s_per_output_tok_s,
    )
    params, host_link, connector_rows = fit_connector(plain, offload, params)
    versions = {run.server_version for run in runs if run.server_version}
    return FitReport(
        params=params,
        host_link_bytes_per_s=host_link,
        errors={"decode_itl": decode_error, "prefill_time": prefill_error},
        points={
            "decode": len(decode),
            "prefill": len(prefill),
            "throughput": len(throughput),
            "connector": connector_rows,
        },
        vllm_version=sorted(versions)[-1] if versions else None,
    )


def model_profiles(runs: list[ProbeRun]) -> list[ModelProfile]:
    return [get_model(name) for name in sorted({run.model for run in runs})]
