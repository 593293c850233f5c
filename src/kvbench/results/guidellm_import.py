"""`kvbench import guidellm FILE... --out DIR`: GuideLLM result JSON -> a kvbench run directory.

GuideLLM (v0.5-0.8 report format: `metadata`, `config`, `benchmarks[]`) keeps per-request stats in
`benchmarks[].requests.{successful, incomplete, errored}[]`. Each benchmark becomes one cell:
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
- successful -> ok, errored -> error, incomplete -> cancelled; warmup/cooldown by GuideLLM's durations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kvbench.errors import UserError
from kvbench.results.layout import (
    CellInfo,
    CellRef,
    CellStatus,
    RunManifest,
    SystemUnderTest,
    make_cell_id,
)
from kvbench.results.records import Phase, RequestRecord, RequestStatus
from kvbench.results.store import RunStore, host_facts, manifest_versions, utc_now_iso
from kvbench.results.summary import CellTally

_STATUS = {
    "successful": RequestStatus.OK,
    "errored": RequestStatus.ERROR,
    "incomplete": RequestStatus.CANCELLED,
}


DEFAULT_SCENARIO = "guidellm"


def split_file_argument(argument: str | Path) -> tuple[str, Path]:
    """`SCENARIO=PATH` -> (SCENARIO, PATH); a bare path (or one whose `=` prefix is not a plain
    name, e.g. a directory with `=` in it) -> ("guidellm", PATH)."""
    text = str(argument)
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name and not Path(text).exists():
        return name, Path(rest)
    return DEFAULT_SCENARIO, Path(text)


def import_guidellm(files: list[Path | str], out: Path) -> Path:
    labelled = [split_file_argument(f) for f in files]
    reports = [(scenario, path, _load(path)) for scenario, path in labelled]
    if not reports:
        raise UserError("import guidellm: give at least one FILE")
    benchmarks = [
        (scenario, path, b) for scenario, path, report in reports for b in report["benchmarks"]
    ]
    scenarios = list(dict.fromkeys(scenario for scenario, _, _ in reports))
    run_t0 = min(
        min(
            _number(b, "start_time", path),
            (b.get("scheduler_state") or {}).get("start_time") or math.inf,
        )
        for _, path, b in benchmarks
    )
    first = reports[0][2]
    manifest = RunManifest(
        kvbench_version=manifest_versions(["kvbench"])["kvbench"],
        run_name=f"guidellm-import-{labelled[0][1].stem}",
        created_at=utc_now_iso(),
        spec={"imported_from": {str(p): scenario for scenario, p, _ in reports}},
        system_under_test=_describe(first, [p for _, p, _ in reports]),
        host=host_facts(),
        versions=manifest_versions(["kvbench"]),
        strategy=_run_strategy(benchmarks),
        baseline_scenario="no-offload" if "no-offload" in scenarios else scenarios[0],
    )
    store = RunStore.create(out, manifest)
    seen: dict[tuple[str, str, float], int] = {}
    for scenario, path, bench in benchmarks:
        _import_benchmark(store, scenario, path, bench, run_t0, seen)
    store.finish()
    return Path(out)


def _load(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UserError(f"{path}: not a GuideLLM result file (no top-level 'benchmarks' list)")
    for index, bench in enumerate(data["benchmarks"]):
        if (
            not isinstance(bench, dict)
            or not isinstance(bench.get("requests"), dict)
            or "config" not in bench
        ):
            raise UserError(
                f"{path}: benchmarks[{index}]: no 'config' and 'requests' (unknown GuideLLM format)"
            )
    return data


def _number(obj: dict, key: str, path: Path) -> float:
    value = obj.get(key)
    if not isinstance(value, (int, float)):
        raise UserError(f"{path}: benchmark {key}: missing or not a number")
    return float(value)


def _describe(report: dict, paths: list[Path]) -> SystemUnderTest:
    version = (report.get("metadata") or {}).get("guidellm_version", "unknown")
    backend = (
        (report["benchmarks"][0]["config"].get("backend") or {}) if report["benchmarks"] else {}
    )
    return SystemUnderTest(
        kind="guidellm-import",
        emulated=False,
        description=f"imported GuideLLM {version} results against {backend.get('target', 'an unknown target')}",
        details={
            "guidellm_version": version,
            "target": backend.get("target"),
            "model": backend.get("model"),
            "request_format": backend.get("request_format"),
            "files": [str(p) for p in paths],
        },
    )


def _run_strategy(benchmarks) -> str:
    kinds = {b["config"].get("strategy", {}).get("type_") for _, _, b in benchmarks}
    return kinds.pop() if len(kinds) == 1 else "sweep"


def _level(strategy: dict) -> float:
    kind = strategy.get("type_")
    if kind == "concurrent":
        return float(strategy["streams"])
    if kind in ("constant", "poisson", "async_constant", "async_poisson"):
        return float(strategy["rate"])
    if kind == "throughput":
        return float(strategy.get("max_concurrency") or 0)
    return 1.0  # synchronous


def _import_benchmark(
    store: RunStore, scenario: str, path: Path, bench: dict, run_t0: float, seen: dict
) -> None:
    config = bench["config"]
    strategy = config.get("strategy") or {}
    model = (config.get("backend") or {}).get("model") or "unknown-model"
    level = _level(strategy)
    repeat = seen.get((model, scenario, level), 0)
    seen[(model, scenario, level)] = repeat + 1
    cell_id = make_cell_id(model, scenario, level, repeat)
    store.register_cells(
        [CellRef(cell_id=cell_id, model=model, scenario=scenario, level=level, repeat=repeat)]
    )
    info = CellInfo(
        cell_id=cell_id,
        model=model,
        scenario=scenario,
        level=level,
        repeat=repeat,
        strategy=strategy.get("type_", "unknown"),
    )
    writer = store.start_cell(info)
    start, end = float(bench["start_time"]), float(bench.get("end_time") or bench["start_time"])
    measure_start = start + float(bench.get("warmup_duration") or 0.0)
    measure_end = end - float(bench.get("cooldown_duration") or 0.0)
    tally = CellTally()
    for group, status in _STATUS.items():
        for raw in bench["requests"].get(group) or []:
            record = _record(raw, status, cell_id, level, run_t0, measure_start, measure_end)
            writer.add_request(record)
            tally.observe(record)
    info.measure_start_s, info.measure_end_s = measure_start - run_t0, measure_end - run_t0
    info.summary = tally.summary(info.measure_start_s, info.measure_end_s)
    info.validity = {
        "itl_available": False,
        "source_file": str(path),
        "guidellm_benchmark_id": config.get("id_"),
        "note": "GuideLLM keeps no per-token times: itl_ms is empty; tpot_ms recomputed as ours",
    }
    store.end_cell(writer, CellStatus.OK)


def _record(
    raw: dict,
    status: RequestStatus,
    cell_id: str,
    level: float,
    run_t0: float,
    measure_start: float,
    measure_end: float,
) -> RequestRecord:
    info = raw.get("info") or {}
    timings = info.get("timings") or {}
    sent = raw.get("request_start_time") or timings.get("request_start") or info.get("started_at")
    end = raw.get("request_end_time") or timings.get("request_end")
    first = timings.get("first_token_iteration")
    scheduled = timings.get("targeted_start") or timings.get("scheduled_at") or sent
    output_tokens = int(raw.get("output_tokens") or 0)
    ttft_ms = raw.get("time_to_first_token_ms")
    if ttft_ms is None and first is not None and sent is not None:
        ttft_ms = (first - sent) * 1000.0
    e2e_ms = (
        raw["request_latency"] * 1000.0
        if raw.get("request_latency") is not None
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
    phase = (
        Phase.MEASURE
        if sent is None or measure_start <= sent <= measure_end
        else (Phase.WARMUP if sent < measure_start else Phase.COOLDOWN)
    )
    return RequestRecord(
        request_id=str(raw.get("request_id") or info.get("request_id")),
        cell_id=cell_id,
        conversation_id=str(info.get("conversation_id") or raw.get("request_id")),
        turn_index=int(info.get("turn_index") or 0),
        phase=phase.value,
        scheduled_s=(scheduled - run_t0) if scheduled is not None else sent_s,
        sent_s=sent_s,
        first_token_s=(first - run_t0) if first is not None else None,
        end_s=(end - run_t0) if end is not None else None,
        ttft_ms=ttft_ms,
        e2e_ms=e2e_ms,
        tpot_ms=tpot_ms,
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=output_tokens,
        cached_tokens=raw.get("cached_tokens"),
        status=status.value,
        error=info.get("error") if status != RequestStatus.OK else None,
        level=level,
    )
