"""Synthetic run directories with planted effects, written with the results/layout.py helpers.

A `SynthCell` says what a cell should look like (throughput factor, KV usage, tier hits, client lag,
failures...); `write_run` turns a list of them into a run directory that follows the contract, so the
analysis can be tested against known answers. Deterministic for a given seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kvbench.results.cell import CacheProtocol
from kvbench.results.deployment import ComponentReset, ResetResult
from kvbench.results.layout import (
    CELL_FILE,
    MANIFEST_FILE,
    REQUESTS_FILE,
    SERVER_METRICS_FILE,
    SYSTEM_METRICS_FILE,
    CellIdentity,
    CellInfo,
    CellRef,
    CellStatus,
    RunManifest,
    SystemUnderTest,
    cell_dir,
    save_model,
)
from kvbench.results.records import (
    REQUEST_SCHEMA,
    SERVER_METRICS_SCHEMA,
    SYSTEM_METRICS_SCHEMA,
    RequestRecord,
)

WINDOW_START_S = 10.0


@dataclass
class SynthCell:
    model: str = "Qwen/Qwen3-8B"
    scenario: str = "no-offload"
    level: float = 8
    repeat: int = 0
    n_requests: int = 400  # successful measure requests at factor 1.0
    throughput_factor: float = 1.0  # planted effect on completed requests (and so on throughput)
    noise_sd: float = 0.0  # relative sd of the request count (per cell)
    window_s: float = 60.0
    output_tokens: int = 100
    ttft_ms: float = 50.0
    tpot_ms: float = 10.0
    failed_requests: int = 0
    status: str = "ok"
    kv_usage: float | None = 0.6  # None: no server metrics at all
    cpu_hit_tokens_per_request: int | None = None  # per-request tier tokens
    offload_bytes_per_s: float | None = None  # GPU_to_CPU and CPU_to_GPU counters
    client_lag_ms: float | None = 2.0  # None: no system metrics
    client_cpu_pct: float = 30.0
    step_lag_s: float | None = 0.001
    cached_tokens: int | None = 64
    reused_prefix_tokens: int = 64
    cache_protocol: dict = field(default_factory=lambda: {"reset": True, "primed": False})
    swept_params: dict = field(default_factory=dict)  # part of the cell's identity and label
    endpoints: int = 1
    part_files: bool = False  # write requests.parquet as a directory of part files
    hit_share: float = (
        0.0  # share of requests that are prefix hits (exactly floor(n * share), spread evenly)
    )
    hit_ttft_ms: float = 20.0  # TTFT of a hit (misses use ttft_ms)
    hit_cached_tokens: int = 240  # cached tokens of a hit (of 256 prompt tokens)
    wave_size: int = 0  # > 0: requests sent and finished in lock-step waves of this many

    @property
    def identity(self) -> CellIdentity:
        return CellIdentity(
            model=self.model,
            base_scenario=self.scenario,
            swept_params=self.swept_params,
            level=self.level,
            repeat=self.repeat,
        )

    @property
    def cell_id(self) -> str:
        return self.identity.cell_id

    @property
    def label(self) -> str:
        return self.identity.scenario_label


def cache_protocol_of(planted: dict) -> CacheProtocol:
    """{"reset": True}: every engine reset; {"reset": False}: no reset was done."""
    reset = ResetResult(components={"engine-0": ComponentReset(reset=True)})
    return CacheProtocol(reset_requested=True, reset=reset if planted.get("reset") else None)


def write_run(
    run_dir: Path,
    cells: list[SynthCell],
    seed: int = 7,
    baseline: str = "no-offload",
    emulated: bool = True,
    kind: str = "emulated",
) -> Path:
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    refs = []
    for spec in cells:
        _write_cell(run_dir, spec, rng)
        ref = CellRef.new(spec.identity)
        ref.status = CellStatus(spec.status)
        refs.append(ref)
    manifest = RunManifest(
        kvbench_version="0.0.0",
        run_name="synthetic",
        created_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T01:00:00Z",
        spec={"name": "synthetic", "seed": seed},
        system_under_test=SystemUnderTest(
            kind=kind, emulated=emulated, description="synthetic test run (planted effects)"
        ),
        baseline_scenario=baseline,
        cells=refs,
    )
    save_model(run_dir / MANIFEST_FILE, manifest)
    return run_dir


def _write_cell(run_dir: Path, spec: SynthCell, rng: np.random.Generator) -> None:
    cdir = cell_dir(run_dir, spec.cell_id)
    cdir.mkdir(parents=True, exist_ok=True)
    start, end = WINDOW_START_S, WINDOW_START_S + spec.window_s
    info = CellInfo.new(spec.identity)
    info.status = CellStatus(spec.status)
    info.measure_start_s, info.measure_end_s = start, end
    info.cache_protocol = cache_protocol_of(spec.cache_protocol)
    info.error = "engine crashed" if spec.status == "failed" else None
    save_model(cdir / CELL_FILE, info)
    if spec.status == "failed":
        return
    rows = _requests(spec, rng, start, end)
    table = pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
    if spec.part_files:
        (cdir / REQUESTS_FILE).mkdir(exist_ok=True)
        half = table.num_rows // 2
        pq.write_table(table.slice(0, half), cdir / REQUESTS_FILE / "part-00000.parquet")
        pq.write_table(table.slice(half), cdir / REQUESTS_FILE / "part-00001.parquet")
    else:
        pq.write_table(table, cdir / REQUESTS_FILE)
    if spec.kv_usage is not None:
        server = _server_samples(spec, rng, start, end, sum(r["output_tokens"] for r in rows))
        pq.write_table(
            pa.Table.from_pylist(server, schema=SERVER_METRICS_SCHEMA), cdir / SERVER_METRICS_FILE
        )
    if spec.client_lag_ms is not None:
        system = _system_samples(spec, start, end)
        pq.write_table(
            pa.Table.from_pylist(system, schema=SYSTEM_METRICS_SCHEMA), cdir / SYSTEM_METRICS_FILE
        )


def _requests(spec: SynthCell, rng: np.random.Generator, start: float, end: float) -> list[dict]:
    noise = 1.0 + (rng.normal(0, spec.noise_sd) if spec.noise_sd else 0.0)
    shape = spec.level / (spec.level + 4.0)  # throughput rises with load and flattens
    n_ok = max(2, int(round(spec.n_requests * shape * spec.throughput_factor * noise)))
    # Completions spread evenly over the window (steady concurrent load), lightly jittered.
    ends = (
        np.linspace(start, end, n_ok + 2)[1:-1]
        + rng.uniform(-0.2, 0.2, n_ok) * spec.window_s / n_ok
    )
    if spec.wave_size:  # whole waves, 1 ms apart inside a wave
        waves = np.arange(n_ok) // spec.wave_size
        wave_gap_s = spec.window_s / (waves[-1] + 2)
        ends = start + (waves + 1) * wave_gap_s + (np.arange(n_ok) % spec.wave_size) * 1e-3
    rows = []
    for i, end_s in enumerate(ends):
        is_hit = int((i + 1) * spec.hit_share) > int(i * spec.hit_share)
        ttft = (spec.hit_ttft_ms if is_hit else spec.ttft_ms) * float(rng.lognormal(0, 0.1))
        itl = [spec.tpot_ms] * (spec.output_tokens - 1)
        e2e = ttft + spec.tpot_ms * (spec.output_tokens - 1)
        sent = float(end_s) - e2e / 1000
        record = RequestRecord(
            request_id=f"{spec.cell_id}-{i}",
            conversation_id=f"c{i // 4}",
            turn_index=i % 4,
            cell_id=spec.cell_id,
            scheduled_s=sent,
            sent_s=sent,
            first_token_s=sent + ttft / 1000,
            end_s=float(end_s),
            ttft_ms=ttft,
            e2e_ms=e2e,
            itl_ms=itl,
            prompt_tokens=256,
            output_tokens=spec.output_tokens,
            cached_tokens=spec.hit_cached_tokens if is_hit else spec.cached_tokens,
            endpoint=f"engine-{i % spec.endpoints}",
            cpu_hit_tokens=spec.cpu_hit_tokens_per_request,
            gpu_hit_tokens=spec.cached_tokens
            if spec.cpu_hit_tokens_per_request is not None
            else None,
            remote_hit_tokens=0 if spec.cpu_hit_tokens_per_request is not None else None,
            reused_prefix_tokens=spec.reused_prefix_tokens,
            level=spec.level,
        )
        rows.append(record.to_row())
    for j in range(spec.failed_requests):
        rows.append(
            RequestRecord(
                request_id=f"{spec.cell_id}-f{j}",
                conversation_id=f"f{j}",
                turn_index=0,
                cell_id=spec.cell_id,
                scheduled_s=start + j,
                sent_s=start + j,
                status="error",
                error="HTTP 500",
                http_status=500,
                level=spec.level,
            ).to_row()
        )
    warm = RequestRecord(
        request_id=f"{spec.cell_id}-w",
        conversation_id="w",
        turn_index=0,
        cell_id=spec.cell_id,
        phase="warmup",
        sent_s=start - 5,
        end_s=start - 4,
        ttft_ms=1.0,
        e2e_ms=1000.0,
        output_tokens=10_000,
        level=spec.level,
    )
    rows.append(warm.to_row())  # a warmup request with huge output: must not count anywhere
    return rows


def _server_samples(
    spec: SynthCell, rng: np.random.Generator, start: float, end: float, out_tokens: int
) -> list[dict]:
    rows = []
    engine = {"engine": "0", "model_name": spec.model}
    ts_values = np.arange(start - 2, end + 2, 1.0)
    for k, ts in enumerate(ts_values):
        elapsed = max(0.0, min(ts, end) - start)

        def add(metric, value, ts=ts, **labels):
            rows.append(
                {
                    "ts_s": float(ts),
                    "source": "engine-0",
                    "metric": metric,
                    "labels": json.dumps({**engine, **labels}, sort_keys=True),
                    "value": float(value),
                }
            )

        add("vllm:kv_cache_usage_perc", spec.kv_usage * (0.8 + 0.2 * (k % 2)))
        add("vllm:num_requests_running", spec.level)
        add("vllm:num_requests_waiting", 2.0)
        add("vllm:prefix_cache_queries_total", 1000.0 * elapsed)
        add("vllm:prefix_cache_hits_total", 250.0 * elapsed)  # 25 % hit rate
        add("process_resident_memory_bytes", 2.0e9)
        if spec.step_lag_s is not None:
            add("kvbench:engine_step_lag_seconds", spec.step_lag_s)
        if spec.offload_bytes_per_s is not None:
            add(
                "vllm:kv_offload_total_bytes_total",
                spec.offload_bytes_per_s * elapsed,
                transfer_type="GPU_to_CPU",
            )
            add(
                "vllm:kv_offload_total_bytes_total",
                spec.offload_bytes_per_s * elapsed / 2,
                transfer_type="CPU_to_GPU",
            )
    return rows


def _system_samples(spec: SynthCell, start: float, end: float) -> list[dict]:
    rows = []
    for ts in np.arange(start, end, 1.0):
        for metric, value in (
            ("dispatch_lag_ms", spec.client_lag_ms),
            ("event_loop_lag_ms", spec.client_lag_ms / 2),
            ("cpu_percent", spec.client_cpu_pct),
        ):
            rows.append(
                {"ts_s": float(ts), "source": "client", "metric": metric, "value": float(value)}
            )
    return rows


def matrix(models, scenarios, levels, repeats, **overrides_by_scenario) -> list[SynthCell]:
    """Cells for every combination; overrides_by_scenario maps a scenario (with '-' as '_') to SynthCell fields."""
    cells = []
    for model in models:
        for scenario in scenarios:
            extra = overrides_by_scenario.get(scenario.replace("-", "_"), {})
            for level in levels:
                for repeat in range(repeats):
                    cells.append(
                        SynthCell(
                            model=model, scenario=scenario, level=level, repeat=repeat, **extra
                        )
                    )
    return cells
