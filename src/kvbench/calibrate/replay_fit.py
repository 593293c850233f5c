"""calibrate's request-path fit: the terms a cost model of GPU work alone does not see, fitted by
replaying the probe's points on the simulated target (calibrate/replay.py) with candidate profiles.

Fitted, over every no-connector probe together (one profile serves every model size):
- `request_overhead_s` + `request_overhead_per_prompt_token_s` x prompt tokens: the line through
  what each lone request's measured TTFT exceeds its replay with no request delay (both >= 0;
  the replay holds the modelled step, the engine's wake-up, the async-scheduling join and the
  simulated client's and router's own delays, so the line holds only what those leave out);
- `prefill_request_overhead_s` (a prefill start's CPU work in the engine core),
  `prefill_overhead_per_prompt_token_s` (that work per token of the whole prompt, cached ones
  included) and `frontend_lag_s_per_stream` (the API server's time per request already in
  flight), from the closed loops (`throughput`: fresh prompts; `throughput_cached`: a cached
  shared prefix plus a few new tokens each): grid searches (see START_GRID_S) minimising the
  sum over closed loops of (TTFT mean error / 10 %)^2 + (output tok/s error / 3 %)^2 (the
  issue's bounds), the lone line refit for each candidate. TPOT p50 is reported, not minimised:
  a closed loop's streams start together and stay in waves, so their decode steps rarely meet a
  prefill and TPOT there answers to the decode terms, not these (with it in the loss, the H200
  probes' profile scored 1,120 on the cells instead of 1,016). The per-token term needs the
  cached loop: fresh prompts of one length cannot tell it from the fixed term, and a lone
  cached prompt cannot tell it from the API server's time (at low load both only delay the
  request; under load the engine core's work slows every step). Probes without that loop keep
  the term as it was.
- `frontend_lag_s_per_output_tok_s` is set to 0: on the H100 probes the time outside the engine
  at 64 streams was the same for models whose output rates differ 2.8x, so it scales with the
  streams served, not their output rate.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvbench.calibrate.fit import ProbeRun, ThroughputPoint, prefill_points, throughput_points
from kvbench.calibrate.profile import profile_entry, write_profile
from kvbench.calibrate.replay import ProbedServer, Replayer
from kvbench.emulator.engine.cost_model import CostParams
from kvbench.spec.catalogs import HardwareProfile

TTFT_BOUND = 0.10
TOK_S_BOUND = 0.03
THROUGHPUT_PHASES = ("throughput", "throughput_cached")
# The searched terms and their grids. The two prefill-start terms trade against each other (a
# larger fixed cost stands in for a per-token one on the fresh loop), so they are searched
# jointly: their whole grid with no lag, then the lag's grid, then their grid's neighbours of the
# best point with that lag. The per-token term is searched only with a cached closed loop.
START_GRID_S = (0.0, 0.5e-3, 1e-3, 1.5e-3, 2e-3, 3e-3, 4e-3, 6e-3)
PER_TOKEN_GRID_S = (0.0, 0.2e-6, 0.4e-6, 0.8e-6, 1.2e-6, 1.6e-6, 2.4e-6)
LAG_GRID_S = (0.0, 0.05e-3, 0.1e-3, 0.2e-3, 0.3e-3, 0.5e-3, 0.8e-3, 1.2e-3)
LONE_LINE_ROUNDS = 3


@dataclass(frozen=True)
class ReplayErrors:
    """Mean |relative error| of the replayed points against the probe's, for a candidate."""

    lone_ttft: float
    throughput_ttft: float
    throughput_tok_s: float
    throughput_tpot: float
    loss: float  # what the search minimises (module doc)


@dataclass(frozen=True)
class RequestPathFit:
    params: CostParams
    errors: ReplayErrors
    candidates: int  # profiles replayed


@dataclass(frozen=True)
class _ProbedModel:
    server: ProbedServer
    lone: list[tuple[int, int, float]]  # (prompt tokens, output tokens, measured median TTFT s)
    throughput: list[ThroughputPoint]  # both closed loops (fresh and cached prompts)


def _probed_models(runs: list[ProbeRun]) -> list[_ProbedModel]:
    models = []
    for run in runs:
        if run.has_cpu_tier:
            continue
        blocks = (
            run.gpu_kv_capacity_tokens // run.block_size if run.gpu_kv_capacity_tokens else None
        )
        lone = [(p.prompt_tokens, p.output_tokens, p.ttft_s) for p in prefill_points(run)]
        throughput = [
            point
            for phase in THROUGHPUT_PHASES
            for point in throughput_points(run, phase)
            if point.output_tok_s > 0
        ]
        models.append(
            _ProbedModel(ProbedServer(run.model, blocks, run.block_size), lone, throughput)
        )
    return models


class _Search:
    def __init__(
        self,
        models: list[_ProbedModel],
        base: HardwareProfile,
        host_link_bytes_per_s: float | None,
        vllm_version: str | None,
        workdir: Path,
    ) -> None:
        self.models = models
        self.base = base
        self.host_link_bytes_per_s = host_link_bytes_per_s
        self.vllm_version = vllm_version  # the written profile's: its engines follow that version
        self.workdir = workdir
        self.candidates = 0

    def _profile(self, params: CostParams) -> Path:
        """A candidate's profile file (a fresh name each: profiles are read when a stack is built)."""
        self.candidates += 1
        entry = profile_entry(
            params,
            self.host_link_bytes_per_s,
            self.vllm_version,
            self.base,
            f"replay-{self.candidates}",
            "",
        )
        return write_profile(entry, self.workdir / f"candidate-{self.candidates}.yaml")

    def with_lone_line(self, params: CostParams) -> tuple[CostParams, float]:
        """`params` with the request delay line refit on the lone points -> (params, lone error).

        A delay is not a plain shift of a lone TTFT (the engine's wake-up runs beside it and its
        idle polls round it), so the line is corrected LONE_LINE_ROUNDS times by the line through
        what the lone points still miss under the current one."""
        fixed_s, per_token_s = 0.0, 0.0
        for _ in range(LONE_LINE_ROUNDS):
            trial = dataclasses.replace(
                params, request_overhead_s=fixed_s, request_overhead_per_prompt_token_s=per_token_s
            )
            prompts, missed_s = [], []
            for prompt, measured_s, simulated_s in self._lone_replays(trial):
                prompts.append(prompt)
                missed_s.append(measured_s - simulated_s)
            delta_fixed_s, delta_per_token_s = _line(prompts, missed_s)
            fixed_s, per_token_s = _nonnegative(
                fixed_s + delta_fixed_s, per_token_s + delta_per_token_s, prompts
            )
        fitted = dataclasses.replace(
            params, request_overhead_s=fixed_s, request_overhead_per_prompt_token_s=per_token_s
        )
        errors = [abs(sim / measured - 1) for _, measured, sim in self._lone_replays(fitted)]
        return fitted, float(np.mean(errors)) if errors else 0.0

    def _lone_replays(self, params: CostParams) -> list[tuple[int, float, float]]:
        """(prompt tokens, measured TTFT, replayed TTFT) of every lone point under `params`."""
        path = self._profile(params)
        found = []
        for model in self.models:
            replayer = Replayer(model.server, path)
            for prompt, output, measured_s in model.lone:
                (simulated_s,) = replayer.lone_ttfts_s([prompt], output)
                found.append((prompt, measured_s, simulated_s))
        return found

    def score(self, params: CostParams) -> tuple[CostParams, ReplayErrors]:
        fitted, lone_error = self.with_lone_line(params)
        path = self._profile(fitted)
        loss, ttft_errors, rate_errors, tpot_errors = 0.0, [], [], []
        for model in self.models:
            replayer = Replayer(model.server, path)
            for point in model.throughput:
                result = replayer.closed_loop(
                    point.concurrency,
                    point.prompt_tokens,
                    point.output_tokens,
                    point.send_window_s,
                    point.cached_prefix_tokens,
                    point.prefixes,
                )
                ttft_error = result.ttft_mean_s / point.ttft_s - 1
                rate_error = result.output_tok_s / point.output_tok_s - 1
                ttft_errors.append(abs(ttft_error))
                rate_errors.append(abs(rate_error))
                loss += (ttft_error / TTFT_BOUND) ** 2 + (rate_error / TOK_S_BOUND) ** 2
                if point.tpot_p50_s and result.tpot_p50_s:  # reported, not minimised
                    tpot_errors.append(abs(result.tpot_p50_s / point.tpot_p50_s - 1))
        return fitted, ReplayErrors(
            lone_error, _mean(ttft_errors), _mean(rate_errors), _mean(tpot_errors), loss
        )


def _mean(errors: list[float]) -> float:
    return float(np.mean(errors)) if errors else 0.0


def _line(prompts: list[int], residual_s: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line; flat at the median for one prompt length."""
    if len(set(prompts)) < 2:
        return float(statistics.median(residual_s)), 0.0
    slope, intercept = np.polyfit(np.array(prompts, dtype=float), np.array(residual_s), 1)
    return float(intercept), float(slope)


def _nonnegative(fixed_s: float, per_token_s: float, prompts: list[int]) -> tuple[float, float]:
    """The line kept >= 0: a falling one becomes flat at its value for the mean prompt, one below
    the origin pivots there about that value."""
    if per_token_s < 0:
        mean_prompt = float(np.mean(prompts))
        return max(0.0, fixed_s + per_token_s * mean_prompt), 0.0
    if fixed_s < 0:
        mean_prompt = float(np.mean(prompts))
        return 0.0, max(0.0, per_token_s + fixed_s / mean_prompt)
    return fixed_s, per_token_s


def fit_request_path(
    runs: list[ProbeRun],
    base: HardwareProfile,
    params: CostParams,
    host_link_bytes_per_s: float | None = None,
    vllm_version: str | None = None,
) -> RequestPathFit | None:
    """The request-path terms by replay (module doc); None when no probe without a connector has
    lone prefill points."""
    models = [m for m in _probed_models(runs) if m.lone]
    if not models:
        return None
    params = dataclasses.replace(params, frontend_lag_s_per_output_tok_s=0.0)
    with tempfile.TemporaryDirectory(prefix="kvbench-calibrate-") as work:
        search = _Search(models, base, host_link_bytes_per_s, vllm_version, Path(work))
        best = _Best(search, params)
        if not any(m.throughput for m in models):
            return RequestPathFit(best.params, best.errors, search.candidates)
        cached_loop = any(p.cached_prefix_tokens for m in models for p in m.throughput)
        per_token_grid = (
            PER_TOKEN_GRID_S if cached_loop else (params.prefill_overhead_per_prompt_token_s,)
        )
        for start_s, per_token_s in itertools.product(START_GRID_S, per_token_grid):
            best.try_values(
                prefill_request_overhead_s=start_s,
                prefill_overhead_per_prompt_token_s=per_token_s,
                frontend_lag_s_per_stream=0.0,
            )
        for lag_s in LAG_GRID_S:
            best.try_values(frontend_lag_s_per_stream=lag_s)
        for start_s, per_token_s in itertools.product(
            _neighbours(START_GRID_S, best.params.prefill_request_overhead_s),
            _neighbours(per_token_grid, best.params.prefill_overhead_per_prompt_token_s),
        ):
            best.try_values(
                prefill_request_overhead_s=start_s, prefill_overhead_per_prompt_token_s=per_token_s
            )
        return RequestPathFit(best.params, best.errors, search.candidates)


def _neighbours(grid: tuple[float, ...], value: float) -> tuple[float, ...]:
    """The grid's value nearest `value` and the ones either side of it."""
    index = min(range(len(grid)), key=lambda i: abs(grid[i] - value))
    return grid[max(0, index - 1) : index + 2]


class _Best:
    """The best candidate so far; `try_values` scores the best one with some terms replaced."""

    def __init__(self, search: _Search, params: CostParams) -> None:
        self.search = search
        self.params, self.errors = search.score(params)

    def try_values(self, **values: Any) -> None:  # CostParams field -> value
        trial, errors = self.search.score(dataclasses.replace(self.params, **values))
        if errors.loss < self.errors.loss:
            self.params, self.errors = trial, errors
