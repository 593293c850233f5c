"""`kvbench import guidellm FILE... --out DIR`: GuideLLM result JSON -> a kvbench run directory.

GuideLLM (v0.5-0.8 report format: `metadata`, `config`, `benchmarks[]`, typed in guidellm_format.py)
keeps per-request stats in `benchmarks[].requests.{successful, incomplete, errored}[]`. Each
benchmark becomes one cell:
- level = the strategy's `streams` (concurrent), `rate` (constant / poisson), 1 (synchronous) or
  its `max_concurrency` (throughput); the same (model, scenario, level) seen again (another file)
  becomes the next repeat;
- scenario: a FILE argument may be written `SCENARIO=PATH` (e.g. `no-offload=run1.json
  native-offload=run2.json`), so GuideLLM runs of several configurations become one comparative
  run; a bare PATH is scenario "guidellm". The baseline is `no-offload` when imported, else the
  first scenario named;
- times become seconds from the run start (the earliest benchmark start over all files);
  ttft_ms / e2e_ms come from GuideLLM's own timings; TPOT is recomputed as ours,
  (e2e - ttft) / (output_tokens - 1): GuideLLM's `time_per_output_token_ms` divides by all tokens;
- GuideLLM stores no per-token arrival times, so `itl_ms` is empty (cell.json says so);
- successful -> ok, errored -> error; incomplete -> cancelled with phase cooldown: they are the
  requests GuideLLM cancelled when the benchmark reached its end (its normal end-of-run state),
  not errors, and outside the statistics as GuideLLM keeps them; cell.json counts them;
- warmup/cooldown by GuideLLM's durations.

Contracts: every input is parsed and checked before anything is written (a wrong-structure file is
a one-line UserError naming it); the run directory is built under a temporary name beside `--out`
and renamed at the end, so a failed import leaves no run directory and can simply be retried.
The manifest says what the run is: imported from GuideLLM, and the target URL it measured.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kvbench.errors import EnvironmentFailure, UserError
from kvbench.results.cell import CellInfo, CellValidity
from kvbench.results.guidellm_format import (
    RATE_STRATEGIES,
    Backend,
    Benchmark,
    GuideLLMReport,
    RequestStats,
    Strategy,
    Timings,
    parse_report,
)
from kvbench.results.manifest import (
    CellIdentity,
    CellRef,
    CellStatus,
    RunManifest,
    SystemUnderTest,
)
from kvbench.results.records import Phase, RequestRecord, RequestStatus
from kvbench.results.store import RunStore, host_facts, manifest_versions, utc_now_iso

T = TypeVar("T")
DEFAULT_SCENARIO = "guidellm"


def split_file_argument(argument: str | Path) -> tuple[str, Path]:
    """`SCENARIO=PATH` -> (SCENARIO, PATH); a bare path (or one whose `=` prefix is not a plain
    name, e.g. a directory with `=` in it) -> ("guidellm", PATH)."""
    text = str(argument)
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name and not Path(text).exists():
        return name, Path(rest)
    return DEFAULT_SCENARIO, Path(text)


def import_guidellm(files: Sequence[Path | str], out: Path) -> Path:
    out = Path(out)
    labelled = [split_file_argument(f) for f in files]
    if not labelled:
        raise UserError("import guidellm: give at least one FILE")
    _check_out(out)
    reports = [(scenario, path, parse_report(path)) for scenario, path in labelled]
    benchmarks = [
        (scenario, path, b) for scenario, path, report in reports for b in report.benchmarks
    ]
    scenarios = list(dict.fromkeys(scenario for scenario, _, _ in reports))
    run_t0 = min(b.first_start_time for _, _, b in benchmarks)
    manifest = RunManifest(
        kvbench_version=manifest_versions(["kvbench"])["kvbench"],
        run_name=f"guidellm-import-{labelled[0][1].stem}",
        created_at=utc_now_iso(),
        spec={"imported_from": {str(p): scenario for scenario, p, _ in reports}},
        system_under_test=_describe(reports[0][2], [p for _, p, _ in reports]),
        host=host_facts(),
        versions=manifest_versions(["kvbench"]),
        strategy=_run_strategy(benchmarks),
        baseline_scenario="no-offload" if "no-offload" in scenarios else scenarios[0],
    )
    building = out.parent / f".{out.name}.importing-{os.getpid()}"
    try:
        store = RunStore.create(building, manifest)
        seen: dict[tuple[str, str, float], int] = {}
        for scenario, path, bench in benchmarks:
            _import_benchmark(store, scenario, path, bench, run_t0, seen)
        store.finish()
        os.replace(building, out)  # `out` is absent or an empty directory (checked above)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise EnvironmentFailure(f"--out: {out} is a file, not a run directory")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out: {out} is not empty; choose a new directory")
    if not out.parent.is_dir():
        raise UserError(f"--out: the parent directory {out.parent} does not exist")


def _describe(report: GuideLLMReport, paths: list[Path]) -> SystemUnderTest:
    version = report.metadata.guidellm_version
    backend = report.backend
    target = backend.target or "an unknown target"
    return SystemUnderTest(
        kind="guidellm-import",
        emulated=False,
        description=f"imported from GuideLLM {version}: its measurements of {target}",
        details={
            "imported_from": "guidellm",
            "guidellm_version": version,
            "target": backend.target,
            "model": backend.model,
            "request_format": backend.request_format,
            "files": [str(p) for p in paths],
        },
    )


def _run_strategy(benchmarks: list[tuple[str, Path, Benchmark]]) -> str:
    kinds = {b.config.strategy.type_ for _, _, b in benchmarks}
    return kinds.pop() if len(kinds) == 1 else "sweep"


def _level(strategy: Strategy) -> float:
    kind = strategy.type_
    if kind == "concurrent" and strategy.streams is not None:
        return float(strategy.streams)
    if kind in RATE_STRATEGIES and strategy.rate is not None:
        return float(strategy.rate)
    if kind == "throughput":
        return float(strategy.max_concurrency or 0)
    return 1.0  # synchronous


def _import_benchmark(
    store: RunStore, scenario: str, path: Path, bench: Benchmark, run_t0: float, seen: dict
) -> None:
    config = bench.config
    backend = config.backend or Backend()
    model = backend.model or "unknown-model"
    level = _level(config.strategy)
    repeat = seen.get((model, scenario, level), 0)
    seen[(model, scenario, level)] = repeat + 1
    identity = CellIdentity(model=model, base_scenario=scenario, level=level, repeat=repeat)
    cell_id = identity.cell_id
    store.register_cells([CellRef.new(identity, config.strategy.type_)])
    info = CellInfo.new(identity, config.strategy.type_)
    writer = store.start_cell(info)
    start = bench.start_time
    end = bench.end_time if bench.end_time is not None else start
    measure_start = start + (bench.warmup_duration or 0.0)
    measure_end = end - (bench.cooldown_duration or 0.0)
    window = _Window(cell_id, level, run_t0, measure_start, measure_end)
    groups = bench.requests
    for group, status in (
        (groups.successful, RequestStatus.OK),
        (groups.errored, RequestStatus.ERROR),
        (groups.incomplete, RequestStatus.CANCELLED),
    ):
        for raw in group:
            writer.add_request(_record(raw, status, window))
    writer.summarize(measure_start - run_t0, measure_end - run_t0)
    info.validity = CellValidity(
        itl_available=False,
        source_file=str(path),
        guidellm_benchmark_id=str(config.id_) if config.id_ is not None else None,
        guidellm_incomplete_requests=len(groups.incomplete),
        note="GuideLLM keeps no per-token times: itl_ms is empty; tpot_ms recomputed as ours. "
        "Incomplete requests (cancelled by GuideLLM at the benchmark's end) are kept as "
        "cancelled, phase cooldown: not errors, outside the statistics",
    )
    store.end_cell(writer, CellStatus.OK)


@dataclass(frozen=True)
class _Window:
    """Where a benchmark's requests go: its cell, level, the run's t0 and the measure window."""

    cell_id: str
    level: float
    run_t0: float
    measure_start: float
    measure_end: float


def _record(raw: RequestStats, status: RequestStatus, window: _Window) -> RequestRecord:
    info = raw.info
    timings = info.timings or Timings()
    run_t0 = window.run_t0
    sent = _first(raw.request_start_time, timings.request_start, info.started_at)
    end = _first(raw.request_end_time, timings.request_end)
    first = timings.first_token_iteration
    scheduled = _first(timings.targeted_start, timings.scheduled_at, sent)
    output_tokens = raw.output_tokens or 0
    ttft_ms = raw.time_to_first_token_ms
    if ttft_ms is None and first is not None and sent is not None:
        ttft_ms = (first - sent) * 1000.0
    e2e_ms = (
        raw.request_latency * 1000.0
        if raw.request_latency is not None
        else ((end - sent) * 1000.0 if end is not None and sent is not None else None)
    )
    tpot_ms = (
        (e2e_ms - ttft_ms) / (output_tokens - 1)
        if (
            status == RequestStatus.OK
            and e2e_ms is not None
            and ttft_ms is not None
            and output_tokens > 1
        )
        else None
    )
    sent_s = (sent - run_t0) if sent is not None else 0.0
    if status == RequestStatus.CANCELLED:
        phase = Phase.COOLDOWN  # GuideLLM's incomplete: cancelled at the benchmark's end
    elif sent is None or window.measure_start <= sent <= window.measure_end:
        phase = Phase.MEASURE
    else:
        phase = Phase.WARMUP if sent < window.measure_start else Phase.COOLDOWN
    request_id = _first(raw.request_id, info.request_id)
    return RequestRecord(
        request_id=str(request_id),
        cell_id=window.cell_id,
        conversation_id=str(_first(info.conversation_id, request_id)),
        turn_index=info.turn_index or 0,
        phase=phase.value,
        scheduled_s=(scheduled - run_t0) if scheduled is not None else sent_s,
        sent_s=sent_s,
        first_token_s=(first - run_t0) if first is not None else None,
        end_s=(end - run_t0) if end is not None else None,
        ttft_ms=ttft_ms,
        e2e_ms=e2e_ms,
        tpot_ms=tpot_ms,
        prompt_tokens=raw.prompt_tokens or 0,
        output_tokens=output_tokens,
        cached_tokens=raw.cached_tokens,
        status=status.value,
        error=info.error if status != RequestStatus.OK else None,
        level=window.level,
    )


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)
