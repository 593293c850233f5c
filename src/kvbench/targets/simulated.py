"""The simulated target: the emulated stack's own components (engines with their tiers, the
router's scorers / picker / KV-block index) in this process, driven in virtual time by the
discrete-event core in `kvbench.simulate`; Redis / Valkey stay real servers on 127.0.0.1.

Contract with the runner:
- `up` starts the scenario's store (if any) and builds the stack once to learn its facts
  (capacities, max_model_len); `Deployment.details` has the emulated target's keys;
- every cell runs on a freshly built stack (`run_cell`), so its caches start empty: `reset_caches`
  flushes the store and reports the engines and router index as reset;
- `run_cell` replaces the live cell (HTTP load, scraping): same records, same server-metric rows,
  same cell.json fields; times are virtual seconds from the cell's start;
- a cell that cannot progress fails with the reason (`SimulationStalled`); Ctrl-C interrupts the
  simulation between events, everything written so far stays valid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kvbench.emulator.stack import REMOTE_PAYLOAD_SCALE, EngineSettings, settings_from_spec
from kvbench.emulator.stores import KVStoreServer, StoreUnavailable
from kvbench.results.layout import CellStatus, SystemUnderTest
from kvbench.results.records import RequestRecord
from kvbench.results.summary import CellTally
from kvbench.simulate.cell import CellSettings, simulate_cell
from kvbench.simulate.client import ClientTiming
from kvbench.simulate.events import EventLoop
from kvbench.simulate.level import SimulationStalled
from kvbench.simulate.router_node import RouterTiming
from kvbench.simulate.stack import DEFAULT_REMOTE_ROUND_TRIP_S, SimStack, build_stack
from kvbench.spec.scenarios import (
    ScenarioCatalog,
    catalog_for_run,
    engine_overrides,
    store_maxmemory_bytes,
)
from kvbench.targets.base import Deployment, TargetError
from kvbench.targets.emulated import COST_MODEL
from kvbench.targets.local_stack import _flush_store, cpu_capacity_tokens, remote_capacity_tokens

STORE_BASE_BYTES = 8 * 1024 * 1024


class SimulatedTarget:
    def __init__(self, target_spec: Any, *, run_dir: Path, seed: int = 0) -> None:
        self.spec = target_spec
        self.run_dir = Path(run_dir)
        self.seed = seed
        self._groups: dict[str, _Group] = {}

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
                    "kv_event_delivery": router.kv_event_delay_s,
                    "endpoint_metrics_refresh": router.refresh_interval_s,
                    "lmcache_remote_round_trip": DEFAULT_REMOTE_ROUND_TRIP_S,
                },
            },
        )

    # ---- Target protocol
    def up(self, model: str, scenario: str, scenario_params: dict[str, Any]) -> Deployment:
        catalog = catalog_for_run(self.run_dir)
        overrides = engine_overrides(catalog, scenario, scenario_params, model)
        settings = settings_from_spec(self.spec, model, overrides, self.seed)
        store = _start_store(catalog, scenario, scenario_params, settings)
        group = _Group(catalog, scenario, dict(scenario_params), settings, store)
        try:
            probe = group.build(EventLoop(), self.spec.hardware, self.seed)
        except BaseException:
            group.stop()
            raise
        base_url = f"simulated://{model}/{scenario}/{len(self._groups)}"
        self._groups[base_url] = group
        try:
            details = _details(probe, model, settings, store)
        finally:
            probe.close()
        sources = {f"engine-{i}": f"{base_url}/engine-{i}/metrics" for i in range(settings.engines)}
        sources["router"] = f"{base_url}/router/metrics"
        return Deployment(
            model=model,
            scenario=scenario,
            served_model_name=settings.served_model_name,
            base_url=base_url,
            api_urls=[f"{base_url}/engine-{i}" for i in range(settings.engines)],
            metrics_sources=sources,
            pids={store.kind: store.pid} if store is not None and store.pid else {},
            details=details,
        )

    def reset_caches(self, deployment: Deployment) -> dict[str, Any]:
        group = self._groups[deployment.base_url]
        what = {"reset": True, "what": "fresh simulated engine (empty GPU prefix cache and tiers)"}
        result: dict[str, Any] = {f"engine-{i}": dict(what) for i in range(group.settings.engines)}
        result["router"] = {"reset": True, "what": "fresh simulated router (empty indexes)"}
        if group.store is not None:
            role = group.catalog.get(group.scenario).kv_store
            result[group.store.kind] = _flush_store(
                group.store.redis_url, role.role if role else "store"
            )
        return result

    def down(self, deployment: Deployment) -> None:
        group = self._groups.pop(deployment.base_url, None)
        if group is not None:
            group.stop()

    # ---- the simulated cell
    def run_cell(
        self, inputs: Any, writer: Any, on_progress: Any = None
    ) -> tuple[CellStatus, str | None]:
        spec, info = inputs.spec, writer.info
        group = self._groups[inputs.deployment.base_url]
        reset_result = self.reset_caches(inputs.deployment) if spec.cache.reset else None
        if spec.load.api != "completions":
            return (
                CellStatus.FAILED,
                "simulated target: load.api chat is not modelled (use completions)",
            )
        tally = CellTally()

        def on_record(record: RequestRecord, phase: str | None) -> None:
            if phase is not None:
                record.phase = phase
            writer.add_request(record)
            tally.observe(record)
            if inputs.hooks.on_record is not None:
                inputs.hooks.on_record(record)

        loop = EventLoop()
        started = time.perf_counter()
        # The repeat's seed (spec seed + repeat) drives NONE_HASH and router tie-breaks alike in every
        # scenario of the repeat, as it drives the workload: scenarios stay paired, twins equal.
        stack = group.build(loop, self.spec.hardware, inputs.level_plan.seed)
        settings = CellSettings(
            prime=spec.cache.prime,
            verify=spec.cache.verify,
            server_metrics=spec.collect.server_metrics,
            interval_s=spec.collect.interval_s,
            request_timeout_s=spec.load.request_timeout_s,
        )
        try:
            outcome = simulate_cell(
                loop,
                stack,
                inputs.workload,
                inputs.level_plan,
                info.cell_id,
                settings,
                reset_result,
                on_record,
                writer.server_metrics.extend,
                on_progress,
            )
        except SimulationStalled as err:
            return CellStatus.FAILED, f"simulation stalled: {err}"
        finally:
            stack.close()
        wall_s = time.perf_counter() - started
        level = outcome.level
        info.cache_protocol = outcome.protocol
        info.measure_start_s = level.measure_start_s
        info.measure_end_s = level.measure_end_s
        info.client = {
            "simulated": True,
            "wall_s": wall_s,
            "simulated_s": loop.now_s,
            "simulated_s_per_wall_s": loop.now_s / wall_s if wall_s > 0 else None,
            "engine_steps": outcome.num_steps,
            "events": outcome.events_run,
        }
        info.summary = tally.summary(level.measure_start_s, level.measure_end_s)
        info.sources = dict(inputs.deployment.metrics_sources)
        info.validity = {
            "loadgen_notes": list(level.notes),
            "return_token_ids": True,
            "scrape": {"scrapes_ok": {name: outcome.scrapes for name in info.sources}},
            "scrape_failures": 0,
            "cache_state_consistent": outcome.protocol.get("verify", {}).get("consistent"),
            "peak_in_flight": level.peak_in_flight,
        }
        if tally.ok == 0:
            return (
                CellStatus.FAILED,
                f"no request succeeded ({tally.failed} failed; first error: {tally.first_error})",
            )
        return CellStatus.OK, None


class _Group:
    """One (model, scenario, params) of the run: its settings and its store, while it is up."""

    def __init__(
        self,
        catalog: ScenarioCatalog,
        scenario: str,
        params: dict[str, Any],
        settings: EngineSettings,
        store: KVStoreServer | None,
    ) -> None:
        self.catalog, self.scenario, self.params = catalog, scenario, params
        self.settings, self.store = settings, store

    def build(self, loop: EventLoop, hardware: str, seed: int) -> SimStack:
        store_url = self.store.url if self.store is not None else None
        return build_stack(
            loop, self.catalog, self.scenario, self.params, self.settings, hardware, store_url, seed
        )

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()
            self.store = None


def _start_store(
    catalog: ScenarioCatalog, scenario: str, params: dict[str, Any], settings: EngineSettings
) -> KVStoreServer | None:
    need = catalog.get(scenario).kv_store
    if need is None:
        return None
    from kvbench.simulate.stack import _runtime, engine_address
    from kvbench.spec.scenarios import render_scenario

    probe = render_scenario(
        catalog, scenario, params, _runtime(settings, engine_address(0), "redis://x:0")
    )
    intended = store_maxmemory_bytes(probe)
    maxmemory = int(intended * REMOTE_PAYLOAD_SCALE) + STORE_BASE_BYTES if intended else None
    try:
        return KVStoreServer(need.kind, maxmemory_bytes=maxmemory).start()
    except StoreUnavailable as err:
        raise TargetError(f"{need.kind} store for {scenario} did not start: {err}") from None


def _details(
    stack: SimStack, model: str, settings: EngineSettings, store: KVStoreServer | None
) -> dict[str, Any]:
    per_engine = [e.engine.pool.num_gpu_blocks * e.engine.kv.block_size for e in stack.engines]
    rendered = stack.rendered
    cpu = cpu_capacity_tokens(
        rendered, model, settings.block_size or 16, settings.tensor_parallel_size
    )
    return {
        "gpu_kv_capacity_tokens": sum(per_engine),
        "gpu_kv_capacity_tokens_per_engine": per_engine,
        "cpu_kv_capacity_tokens": cpu * settings.engines if cpu is not None else None,
        "cpu_kv_capacity_tokens_per_engine": cpu,
        "remote_kv_capacity_tokens": remote_capacity_tokens(rendered, model),
        "max_model_len": stack.max_model_len,
        "engines": settings.engines,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pids": {store.kind: store.pid} if store is not None and store.pid else {},
        "kv_store": {
            "kind": store.kind,
            "role": rendered.kv_store.role if rendered.kv_store else None,
            "url": store.url,
            "maxmemory_bytes": store.maxmemory_bytes,
        }
        if store
        else None,
        "scenario_params": rendered.params,
        "engine_args": rendered.engine_args,
        "engine_env": rendered.engine_env,
        "epp_config": rendered.epp_config_source,
        "decision_log": None,
        "logs": None,
    }
