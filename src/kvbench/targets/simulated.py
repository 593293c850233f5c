"""The simulated target: the emulated stack's own components (engines with their tiers, the
router's scorers / picker / KV-block index) in this process, driven in virtual time by the
discrete-event core in `kvbench.simulate`; Redis / Valkey stay real servers on 127.0.0.1.

Contract with the runner:
- `up` learns the scenario's facts (capacities, max_model_len) from a probe stack and starts its
  store; `Deployment.facts` as the emulated target fills them;
- every cell runs on a freshly built stack, so its caches start empty: the reset result says so
  (and the store is flushed);
- `run_cell` replaces the live cell (HTTP load, scraping): same records, same server-metric rows,
  same cell.json fields; times are virtual seconds from the cell's start;
- `prepare` (called once with the pending cells) farms cells out to `workers` processes; `run_cell`
  then writes a cell's precomputed result, in the runner's order, or simulates it in process when
  it was not prepared (a sweep's rate steps need earlier steps' rates) or its workload differs;
- a cell that cannot progress fails with the reason; Ctrl-C interrupts the run, what was written
  stays valid, `--resume` finishes;
- logs as the emulated target keeps them: `logs/NN-<model>__<scenario>/` per `up` with the EPP
  config and `router-decisions.jsonl` (the live router's JSON lines, `ts_s` in virtual seconds of
  the cell); a worker writes its cell's decisions to a part file, appended in the runner's order.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Callable
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

from kvbench.emulator.stack import REMOTE_PAYLOAD_SCALE
from kvbench.loadgen.api import validate_conversations
from kvbench.results.cell import CellValidity, ScrapeStats
from kvbench.results.manifest import CellStatus, SystemUnderTest
from kvbench.simulate.cell import CellSettings
from kvbench.simulate.client import ClientTiming
from kvbench.simulate.engine_node import IDLE_WAKE_S
from kvbench.simulate.events import EventLoop
from kvbench.simulate.router_node import RouterTiming
from kvbench.simulate.stack import DEFAULT_REMOTE_ROUND_TRIP_S, SimStack
from kvbench.spec.scenarios import ScenarioCatalog, load_catalog
from kvbench.targets.base import (
    Deployment,
    DeploymentFacts,
    KvTier,
    ResetResult,
)
from kvbench.targets.emulated import COST_MODEL
from kvbench.targets.local_stack import (
    cpu_capacity_tokens,
    kv_store_facts,
    remote_capacity_tokens,
)
from kvbench.targets.simulated_cells import (
    CellJob,
    CellResult,
    ScenarioStack,
    WorkloadRecipe,
    init_worker,
    run_job,
    workload_fingerprint,
)
from kvbench.targets.simulated_progress import SimulatedRunProgress
from kvbench.workload.sizing import KvCapacities


class SimulatedTarget:
    def __init__(self, target_spec: Any, *, run_dir: Path, seed: int = 0) -> None:
        self.spec = target_spec
        self.run_dir = Path(run_dir)
        self.seed = seed
        self._stacks: dict[str, ScenarioStack] = {}
        self._prepared: dict[str, AsyncResult[CellResult]] = {}
        self._pool: Pool | None = None
        self._progress: SimulatedRunProgress | None = None
        self._ups = 0
        self._log_dirs: dict[str, Path] = {}  # by base_url: the deployment's logs folder
        # The run's scenario catalog: the runner passes it to up() and prepare(); built-ins until then.
        self._catalog: ScenarioCatalog = load_catalog()

    @property
    def workers(self) -> int:
        return int(getattr(self.spec, "workers", None) or os.cpu_count() or 1)

    def describe(self) -> SystemUnderTest:
        spec = self.spec
        router, client = RouterTiming(), ClientTiming()
        return SystemUnderTest(
            kind="simulated",
            emulated=True,
            description=(
                f"simulated: emulated vLLM v1 engines (kvbench emulator, roofline cost model), "
                f"{spec.hardware} profile, {spec.engines} engine(s) x TP={spec.tensor_parallel_size}, "
                "behind the emulated llm-d endpoint picker, run in virtual time by a discrete-event "
                "simulation; numbers are the cost model's, not measurements of real hardware"
            ),
            details={
                "hardware": spec.hardware,
                "cost_model": COST_MODEL,
                "clock": "virtual (discrete-event simulation; times are simulated seconds)",
                "engines": spec.engines,
                "tensor_parallel_size": spec.tensor_parallel_size,
                "gpu_memory_utilization": spec.gpu_memory_utilization,
                "num_gpu_blocks_override": spec.num_gpu_blocks_override,
                "max_num_seqs": spec.max_num_seqs,
                "block_size": spec.block_size,
                "router": "emulated llm-d EPP scheduler in process (llm-d EPP semantics)",
                "kv_stores": "real redis-server / valkey-server on 127.0.0.1",
                "lmcache_remote_payload_scale": REMOTE_PAYLOAD_SCALE,
                "modelled_delays_s": {
                    "client_to_engine": client.request_delay_s,
                    "engine_to_client": client.response_delay_s,
                    "front_per_prompt_token": client.front_s_per_prompt_token,
                    "idle_engine_wake": IDLE_WAKE_S,
                    "router_approx_prefix_per_prompt_token": router.approx_prefix_s_per_token,
                    "router_precise_prefix_per_prompt_token": router.precise_prefix_s_per_token,
                    "kv_event_delivery": router.kv_event_delay_s,
                    "endpoint_metrics_refresh": router.refresh_interval_s,
                    "lmcache_remote_round_trip": DEFAULT_REMOTE_ROUND_TRIP_S,
                },
            },
        )

    # ---- Target protocol
    def up(
        self,
        model: str,
        scenario: str,
        scenario_params: dict[str, Any],
        *,
        catalog: ScenarioCatalog | None = None,
    ) -> Deployment:
        if catalog is not None:
            self._catalog = catalog
        group = ScenarioStack(self._job(model, scenario, scenario_params))
        base_url = f"simulated://{model}/{scenario}/{len(self._stacks)}"
        try:
            facts = _facts(group, model)
        except BaseException:
            group.stop()
            raise
        self._stacks[base_url] = group
        self._ups += 1
        log_dir = self.run_dir / "logs" / f"{self._ups:02d}-{model.split('/')[-1]}__{scenario}"
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "epp-config.yaml").write_text(group.epp_config_yaml())
        decisions = log_dir / DECISION_LOG
        decisions.touch()
        self._log_dirs[base_url] = log_dir
        facts = facts.model_copy(
            update={"decision_log_path": str(decisions), "logs_path": str(log_dir)}
        )
        engines = group.settings.engines
        sources = {f"engine-{i}": f"{base_url}/engine-{i}/metrics" for i in range(engines)}
        sources["router"] = f"{base_url}/router/metrics"
        store = group.store
        return Deployment(
            model=model,
            scenario=scenario,
            served_model_name=group.settings.served_model_name,
            base_url=base_url,
            api_urls=[f"{base_url}/engine-{i}" for i in range(engines)],
            metrics_sources=sources,
            pids={store.kind: store.pid} if store is not None and store.pid else {},
            facts=facts,
        )

    def reset_caches(self, deployment: Deployment) -> ResetResult:
        return self._stacks[deployment.base_url].reset()

    def down(self, deployment: Deployment) -> None:
        group = self._stacks.pop(deployment.base_url, None)
        self._log_dirs.pop(deployment.base_url, None)
        if group is not None:
            group.stop()

    # ---- parallel cells
    def prepare(
        self,
        spec: Any,
        base_dir: Path,
        plans: list[Any],
        level_plan_of: Callable[[Any], Any],
        catalog: ScenarioCatalog | None = None,
    ) -> None:
        """Start the pending cells in worker processes (runner's CellPlans, in run order)."""
        if catalog is not None:
            self._catalog = catalog
        self._progress = SimulatedRunProgress(len(plans))
        if self.workers < 2 or len(plans) < 2:
            return
        capacities: dict[tuple[str, int], KvCapacities] = {}
        jobs: list[CellJob] = []
        for plan in plans:
            try:
                level_plan = level_plan_of(plan)
            except RuntimeError:
                continue  # a sweep's rate step: needs rates measured by earlier cells
            key = (plan.model, plan.repeat)
            if key not in capacities:  # the runner's rule: the model's first scenario sizes it
                probe = ScenarioStack(
                    self._job(plan.model, plan.scenario_name, plan.scenario_params), store=False
                )
                capacities[key] = KvCapacities.from_facts(_facts(probe, plan.model))
            job = self._job(plan.model, plan.scenario_name, plan.scenario_params)
            job.cell_id, job.level_plan = plan.cell_id, level_plan
            job.settings, job.reset = _cell_settings(spec), spec.cache.reset
            job.decision_log = self._decision_part(plan.cell_id)
            job.recipe = WorkloadRecipe(
                spec.workload, spec.seed + plan.repeat, capacities[key], base_dir
            )
            jobs.append(job)
        if len(jobs) < 2:
            return
        # fork: no resource-tracker process outlives the pool (spawn would leave one per parent)
        context = multiprocessing.get_context("fork")
        self._pool = context.Pool(min(self.workers, len(jobs)), initializer=init_worker)
        self._prepared = {job.cell_id: self._pool.apply_async(run_job, (job,)) for job in jobs}

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._pool is not None:
            if any(not result.ready() for result in self._prepared.values()):
                # interrupted (or a cell failed the run): stop the workers now; each one's store
                # dies with it (the store servers are started to die with their parent)
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
        self._prepared.clear()
        shutil.rmtree(self._parts_dir, ignore_errors=True)

    @property
    def _parts_dir(self) -> Path:
        return self.run_dir / "logs" / ".router-decision-parts"

    def _decision_part(self, cell_id: str) -> Path:
        self._parts_dir.mkdir(parents=True, exist_ok=True)
        return self._parts_dir / f"{cell_id}.jsonl"

    def _append_decisions(self, cell_id: str, base_url: str) -> None:
        """The cell's decision lines onto its deployment's log (the runner's cell order)."""
        part = self._parts_dir / f"{cell_id}.jsonl"
        if not part.is_file():
            return
        with (self._log_dirs[base_url] / DECISION_LOG).open("ab") as log, part.open("rb") as lines:
            shutil.copyfileobj(lines, log)
        part.unlink()

    # ---- the simulated cell
    def run_cell(
        self, inputs: Any, writer: Any, on_progress: Any = None
    ) -> tuple[CellStatus, str | None]:
        spec, info = inputs.spec, writer.info
        validate_conversations(inputs.endpoint, inputs.workload.conversations)  # live's UserError
        result = self._prepared_result(info.cell_id, inputs.workload)
        if result is None:
            job = self._job(inputs.deployment.model, info.base_scenario, info.scenario_params)
            job.cell_id, job.level_plan = info.cell_id, inputs.level_plan
            job.settings, job.reset, job.workload = (
                _cell_settings(spec),
                spec.cache.reset,
                inputs.workload,
            )
            job.decision_log = self._decision_part(info.cell_id)
            job.on_progress = on_progress  # in process: the level's updates, in simulated time
            result = run_job(job, self._stacks[inputs.deployment.base_url])
        self._append_decisions(info.cell_id, inputs.deployment.base_url)
        written = _write(result, inputs, writer)
        if self._progress is not None:
            summary = info.summary
            tok_s = summary.output_tokens_per_s if summary is not None else None
            self._progress.cell_done(info.cell_id, result.simulated_s, result.wall_s, tok_s)
        return written

    def _prepared_result(self, cell_id: str, workload: Any) -> CellResult | None:
        future = self._prepared.pop(cell_id, None)
        if future is None:
            return None
        result = future.get()
        if result.workload_fingerprint != workload_fingerprint(workload):
            return None  # sized differently than the runner's workload: simulate it here
        return result

    def _job(self, model: str, scenario: str, params: dict[str, Any]) -> CellJob:
        return CellJob(
            target_spec=self.spec,
            run_dir=self.run_dir,
            catalog=self._catalog,
            seed=self.seed,
            model=model,
            scenario=scenario,
            scenario_params=dict(params),
            cell_id="",
            level_plan=None,  # type: ignore[arg-type]
            settings=None,  # type: ignore[arg-type]
            reset=True,
        )


DECISION_LOG = "router-decisions.jsonl"


def _cell_settings(spec: Any) -> CellSettings:
    return CellSettings(
        prime=spec.cache.prime,
        verify=spec.cache.verify,
        server_metrics=spec.collect.server_metrics,
        interval_s=spec.collect.interval_s,
        request_timeout_s=spec.load.request_timeout_s,
        api=spec.load.api,
    )


def _write(result: CellResult, inputs: Any, writer: Any) -> tuple[CellStatus, str | None]:
    """Hand a cell's records and rows to its writer and fill cell.json as a live cell does."""
    info = writer.info
    for record in result.records:
        writer.add_request(record)
        if inputs.hooks.on_record is not None:
            inputs.hooks.on_record(record)
    writer.server_metrics.extend(result.server_rows)
    if result.error is not None or result.outcome is None:
        return CellStatus.FAILED, result.error or "the simulation produced no outcome"
    outcome, level = result.outcome, result.outcome.level
    info.cache_protocol = outcome.protocol
    writer.summarize(level.measure_start_s, level.measure_end_s)
    info.client = {
        "simulated": True,
        "wall_s": result.wall_s,
        "simulated_s": result.simulated_s,
        "simulated_s_per_wall_s": result.simulated_s / result.wall_s if result.wall_s else None,
        "engine_steps": outcome.num_steps,
        "events": outcome.events_run,
    }
    info.sources = dict(inputs.deployment.metrics_sources)
    info.validity = CellValidity(
        loadgen_notes=list(level.notes),
        return_token_ids=True,
        scrape=ScrapeStats(scrapes_ok={name: outcome.scrapes for name in info.sources}),
        scrape_failures=0,
        cache_state_consistent=(outcome.protocol.verify or {}).get("consistent"),
        peak_in_flight=level.peak_in_flight,
    )
    info.validity.degradation = outcome.degradation  # the servers' own counters, as live
    summary = info.summary
    if summary is None or summary.requests_ok == 0:
        failed = summary.requests_failed if summary else 0
        first_error = summary.first_error if summary else None
        return (
            CellStatus.FAILED,
            f"no request succeeded ({failed} failed; first error: {first_error})",
        )
    return CellStatus.OK, None


def _facts(group: ScenarioStack, model: str) -> DeploymentFacts:
    """What the emulated target reports, from a probe stack of the scenario."""
    stack: SimStack = group.build(EventLoop(), seed=0)
    try:
        per_engine: list[int | None] = [
            e.engine.pool.num_gpu_blocks * e.engine.kv.block_size for e in stack.engines
        ]
        max_model_len = stack.max_model_len
    finally:
        stack.close()
    settings, rendered, store = group.settings, stack.rendered, group.store
    cpu = cpu_capacity_tokens(
        rendered, model, settings.block_size or 16, settings.tensor_parallel_size
    )
    tiers: list[KvTier] = ["gpu"]
    if cpu:
        tiers.append("cpu")
    if rendered.kv_store is not None and rendered.kv_store.role == "lmcache-remote":
        tiers.append("remote")
    return DeploymentFacts(
        gpu_kv_capacity_tokens=sum(c for c in per_engine if c is not None),
        gpu_kv_capacity_tokens_per_engine=per_engine,
        cpu_kv_capacity_tokens=cpu * settings.engines if cpu is not None else None,
        cpu_kv_capacity_tokens_per_engine=cpu,
        remote_kv_capacity_tokens=remote_capacity_tokens(rendered, model),
        kv_tiers=tiers,
        max_model_len=max_model_len,
        engines=settings.engines,
        tensor_parallel_size=settings.tensor_parallel_size,
        router="emulated llm-d EPP scheduler in process (virtual time)",
        store=kv_store_facts(rendered, store),
        engine_args=list(rendered.engine_args),
        engine_env=dict(rendered.engine_env),
        epp_config_path=rendered.epp_config_source,
    )
