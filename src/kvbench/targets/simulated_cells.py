"""Simulated cells as self-contained jobs, so they can run in worker processes.

A `CellJob` holds everything one cell needs (target fields, scenario, params, level plan, and the
workload or how to rebuild it); `run_job` builds the cell's own stack (and its own store, when the
scenario needs one), runs it in virtual time and returns a `CellResult` with every record and
server-metric row. Cells are independent (each starts on a fresh stack, all times are the cell's
own virtual seconds), so running them in parallel or in order gives the same bytes.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing.util
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvbench.emulator.stack import REMOTE_PAYLOAD_SCALE, EngineSettings, settings_from_spec
from kvbench.emulator.stores import KVStoreServer, StoreUnavailable
from kvbench.loadgen.plan import LevelPlan, ProgressUpdate
from kvbench.results.deployment import ComponentReset, ResetResult
from kvbench.results.records import RequestRecord
from kvbench.simulate.cell import CellOutcome, CellSettings, simulate_cell
from kvbench.simulate.events import EventLoop
from kvbench.simulate.level import SimulationStalled
from kvbench.simulate.stack import SimStack, _runtime, build_stack, engine_address
from kvbench.spec.scenarios import (
    ScenarioCatalog,
    engine_overrides,
    render_scenario,
    store_maxmemory_bytes,
)
from kvbench.targets.base import TargetError
from kvbench.targets.local_stack import _flush_store
from kvbench.workload.build import build_workload
from kvbench.workload.sizing import KvCapacities
from kvbench.workload.types import Workload

STORE_BASE_BYTES = 8 * 1024 * 1024


def workload_fingerprint(workload: Workload) -> str:
    """Identity of a workload's conversations (ids, token ids, output lengths, think times). Tuples
    of ints and floats hash the same in every process (only str hashing is randomised)."""
    digest = hashlib.blake2b(digest_size=16)
    for conversation in workload.conversations:
        digest.update(conversation.conversation_id.encode())
        tokens = (
            conversation.prefix_token_ids,
            conversation.think_time_s,
            tuple((turn.question_token_ids, turn.output_tokens) for turn in conversation.turns),
        )
        digest.update(hash(tokens).to_bytes(8, "big", signed=True))
    return digest.hexdigest()


@dataclass(frozen=True)
class WorkloadRecipe:
    """How the runner builds a (model, repeat)'s workload: rebuilt identically in a worker."""

    spec: Any  # spec.experiment WorkloadSpec
    seed: int
    capacities: KvCapacities
    base_dir: Path


@dataclass
class CellJob:
    target_spec: Any  # spec.experiment SimulatedTarget
    run_dir: Path
    catalog: ScenarioCatalog  # the run's scenario catalog (the runner's, through up / prepare)
    seed: int  # the target's seed (engines' --seed)
    model: str
    scenario: str
    scenario_params: dict[str, Any]
    cell_id: str
    level_plan: LevelPlan
    settings: CellSettings
    reset: bool
    workload: Workload | None = None  # in process: the runner's own
    recipe: WorkloadRecipe | None = None  # in a worker: rebuilt from this
    decision_log: Path | None = None  # the router's decisions of this cell go here (JSON lines)
    on_progress: Callable[[ProgressUpdate], None] | None = None  # in process only (not pickled)


@dataclass
class CellResult:
    cell_id: str
    records: list[RequestRecord] = field(default_factory=list)
    server_rows: list[dict] = field(default_factory=list)
    outcome: CellOutcome | None = None
    reset: ResetResult | None = None
    error: str | None = None  # the reason a cell could not be simulated
    workload_fingerprint: str = ""
    wall_s: float = 0.0
    simulated_s: float = 0.0


class ScenarioStack:
    """One (model, scenario, params): engine settings and the real store, while it is up."""

    def __init__(self, job: CellJob, store: bool = True) -> None:
        self.catalog: ScenarioCatalog = job.catalog
        self.scenario, self.params = job.scenario, dict(job.scenario_params)
        overrides = engine_overrides(self.catalog, job.scenario, job.scenario_params, job.model)
        self.settings: EngineSettings = settings_from_spec(
            job.target_spec, job.model, overrides, job.seed
        )
        self.hardware: str = job.target_spec.hardware
        self.store = self._start_store() if store else None

    def _start_store(self) -> KVStoreServer | None:
        need = self.catalog.get(self.scenario).kv_store
        if need is None:
            return None
        probe = render_scenario(
            self.catalog,
            self.scenario,
            self.params,
            _runtime(self.settings, engine_address(0), "redis://x:0"),
        )
        intended = store_maxmemory_bytes(probe)
        maxmemory = int(intended * REMOTE_PAYLOAD_SCALE) + STORE_BASE_BYTES if intended else None
        try:
            return KVStoreServer(need.kind, maxmemory_bytes=maxmemory).start()
        except StoreUnavailable as err:
            raise TargetError(
                f"{need.kind} store for {self.scenario} did not start: {err}"
            ) from None

    def build(self, loop: EventLoop, seed: int) -> SimStack:
        store_url = self.store.url if self.store is not None else None
        return build_stack(
            loop,
            self.catalog,
            self.scenario,
            self.params,
            self.settings,
            self.hardware,
            store_url,
            seed,
        )

    def epp_config_yaml(self) -> str:
        """The router's EndpointPickerConfig, as the live stack writes it to its logs folder."""
        store_url = self.store.url if self.store is not None else None
        runtime = _runtime(self.settings, engine_address(0), store_url)
        return render_scenario(self.catalog, self.scenario, self.params, runtime).epp_config_yaml()

    def reset(self) -> ResetResult:
        """Every cell gets a freshly built stack; the store is flushed (the emulated target's reset)."""
        what = "fresh simulated engine (empty GPU prefix cache and tiers)"
        result = ResetResult()
        for i in range(self.settings.engines):
            result.components[f"engine-{i}"] = ComponentReset(reset=True, what=what)
        result.components["router"] = ComponentReset(
            reset=True, what="fresh simulated router (empty indexes)"
        )
        if self.store is not None:
            need = self.catalog.get(self.scenario).kv_store
            result.components[self.store.kind] = _flush_store(
                self.store.redis_url, need.role if need else "store"
            )
        return result

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()
            self.store = None


# In a worker process: the scenario stack (and its store server) of the latest job, kept for the
# next job of the same (model, scenario, params) when that job resets (flushes) the store, as the
# in-process path keeps one per deployment; the workload of the latest recipe, likewise.
_worker_stack: tuple[tuple, ScenarioStack] | None = None
_worker_workload: tuple[bytes, Workload] | None = None


def _stack_key(job: CellJob) -> tuple:
    return (job.model, job.scenario, pickle.dumps(job.scenario_params))


def _worker_group(job: CellJob) -> ScenarioStack:
    global _worker_stack
    key = _stack_key(job)
    if _worker_stack is not None:
        kept_key, kept = _worker_stack
        if kept_key == key and job.reset:
            return kept
        kept.stop()
        _worker_stack = None
    group = ScenarioStack(job)
    if group.store is not None:  # stopped when the worker exits (pool close), work dir removed
        multiprocessing.util.Finalize(group, group.stop, exitpriority=10)
    _worker_stack = (key, group)
    return group


def init_worker() -> None:
    """A pool worker's signals. Ctrl-C belongs to the parent (it ends the run and terminates the
    pool), so the worker ignores SIGINT; the pool's SIGTERM ends the worker with SystemExit, so its
    finalizers still stop its store and remove the store's work directory. What fork hands down
    instead (cli's SIGTERM-as-SIGINT) let asyncio.run turn the SIGTERM into a cancellation that the
    cell absorbed (its in-flight requests record themselves cancelled): the worker then finished
    the cell and blocked for good writing a result nobody read, and the parent hung in
    Pool.terminate joining it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_job(job: CellJob, scenario_stack: ScenarioStack | None = None) -> CellResult:
    """Run one cell. With no `scenario_stack` (a worker), the worker's stack for the job's
    scenario is used, started if it has none (a store left from a previous cell is flushed by the
    cell's reset; without a reset the cell gets a fresh one). It dies with the worker."""
    group = scenario_stack or _worker_group(job)
    return _run(job, group)


def _workload_of(recipe: WorkloadRecipe) -> Workload:
    global _worker_workload
    key = pickle.dumps(recipe)
    if _worker_workload is not None and _worker_workload[0] == key:
        return _worker_workload[1]
    workload, _ = build_workload(
        recipe.spec, recipe.seed, recipe.capacities, base_dir=recipe.base_dir
    )
    _worker_workload = (key, workload)
    return workload


# The simulation allocates millions of small, mostly acyclic objects (events, outputs, blocks'
# hashes) that reference counting frees; the default generation-0 threshold (700) makes the cyclic
# collector rescan the ever-growing live set (engines' block pools, the workload) thousands of
# times a cell. A larger threshold keeps cycle collection, at a fraction of the passes.
SIM_GC_THRESHOLD = (100_000, 50, 50)


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*SIM_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _run(job: CellJob, group: ScenarioStack) -> CellResult:
    with fewer_gc_passes():
        return _run_cell(job, group)


def _run_cell(job: CellJob, group: ScenarioStack) -> CellResult:
    started = time.perf_counter()
    workload = job.workload
    if workload is None:
        assert job.recipe is not None
        workload = _workload_of(job.recipe)
    result = CellResult(job.cell_id, workload_fingerprint=workload_fingerprint(workload))
    result.reset = group.reset() if job.reset else None

    loop = EventLoop()
    # The repeat's seed (spec seed + repeat) drives NONE_HASH and router tie-breaks alike in every
    # scenario of the repeat, as it drives the workload: scenarios stay paired, twins equal.
    stack = group.build(loop, job.level_plan.seed)
    log = job.decision_log.open("wb") if job.decision_log is not None else None
    stack.router.decision_log = log
    try:
        result.outcome = simulate_cell(
            loop,
            stack,
            workload,
            job.level_plan,
            job.cell_id,
            job.settings,
            result.reset,
            result.records.append,
            result.server_rows.extend,
            job.on_progress,
        )
    except SimulationStalled as err:
        result.error = f"simulation stalled: {err}"
    finally:
        stack.close()
        if log is not None:
            log.close()
    result.wall_s = time.perf_counter() - started
    result.simulated_s = loop.now_s
    return result
