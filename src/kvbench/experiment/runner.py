"""`kvbench run`: expand the matrix, bring each (model, scenario) up, run its cells, write the run.

Contracts:
- finished cells (status ok) are never rerun or duplicated; with --resume every other cell is redone
  from scratch (RunStore deletes its partial data first);
- a cell that fails (target down, endpoint unreachable, no request succeeded) is recorded as failed
  with its error and the matrix goes on; the exit code is 1 when any cell of the matrix failed;
- Ctrl-C marks the running cell interrupted, keeps everything written so far, and exits 130;
  `--resume` finishes the run. target.down() is always called for a deployment that came up;
- every scenario of one repeat gets the same workload (seed = spec.seed + repeat), so scenarios are
  paired; repeats differ. Capacity-aware sizing is fixed per (model, repeat) by the first scenario
  that ran, for the same reason.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from kvbench.errors import UserError
from kvbench.experiment.cell_run import CellInputs, RunnerHooks, run_cell
from kvbench.experiment.cells import CellPlan, expand_cells
from kvbench.experiment.run_progress import RunProgress
from kvbench.results.cell import (
    CellInfo,
    DeploymentRecord,
    LevelPlanFacts,
    WorkingSetReport,
    WorkloadFacts,
)
from kvbench.results.manifest import CellStatus, RunManifest
from kvbench.results.run_lock import RunLock
from kvbench.results.store import RunStore, host_facts, manifest_versions, utc_now_iso
from kvbench.results.summary import CellSummary
from kvbench.spec.experiment import ExperimentSpec, load_spec
from kvbench.spec.scenarios import ScenarioCatalog
from kvbench.targets import build_target
from kvbench.targets.base import Deployment, TargetError
from kvbench.targets.endpoint import fetch_models, max_model_len_of
from kvbench.workload.build import build_workload, longest_conversation_tokens
from kvbench.workload.sizing import KvCapacities

VERSIONED_PACKAGES = [
    "kvbench",
    "aiohttp",
    "pydantic",
    "pyarrow",
    "pandas",
    "numpy",
    "psutil",
    "rich",
]
DEFAULT_THROUGHPUT_CONCURRENCY = 512
_LEVEL_UNITS = {
    "concurrent": "concurrent streams",
    "synchronous": "1 stream",
    "constant": "req/s",
    "poisson": "req/s",
    "sweep": "sweep step: 1 synchronous, 2 throughput, 3.. constant rate "
    "(the rate in req/s is cell.json level_plan.level)",
}  # GuideLLM's default max_concurrency for its throughput stage


def run_experiment_cli(
    spec_path: Path,
    out: Path | None,
    resume: bool = False,
    only=(),
    hooks: RunnerHooks | None = None,
    console: Console | None = None,
    dry_run: bool = False,
    target_kind: str | None = None,
    report: bool = True,
) -> int:
    """Run the experiment; then, unless `report` is False or the run was interrupted, build its
    report (REPORT_FORMATS) and print where it is on stdout. Returns the exit code."""
    from kvbench.spec.experiment import with_target_kind
    from kvbench.spec.scenarios import catalog_for_spec, resolve_experiment, validate_scenarios

    spec_path = resolve_experiment(spec_path)  # a file, or the name of a bundled experiment
    spec = load_spec(spec_path)
    if target_kind is not None:
        spec = with_target_kind(spec, target_kind)
    catalog = catalog_for_spec(spec)  # read once; targets get it through up()
    if spec.target.kind != "endpoint":  # an existing endpoint's scenarios are labels only
        validate_scenarios(catalog, spec.scenarios, spec.scenario_params)
    plans = expand_cells(spec, list(only))
    if dry_run or getattr(
        spec.target, "dry_run", False
    ):  # k8s `dry_run: true` is the same as --dry-run
        from kvbench.experiment.dry_run import print_dry_run

        return print_dry_run(spec, plans, console or Console())
    run_dir = (
        Path(out) if out else (spec.output_dir or Path("kvbench-runs") / f"{spec.name}-{_stamp()}")
    )
    console = console or Console(stderr=True)
    with RunLock(run_dir):  # one process per run directory (a second one is refused)
        target = build_target(spec.target, run_dir=run_dir, seed=spec.seed)
        store = _open_store(spec, run_dir, resume, target.describe(), catalog)
        store.register_cells([p.ref() for p in plans])
        hooks = hooks or RunnerHooks()
        runner = ExperimentRunner(spec, Path(spec_path), store, target, catalog, hooks, console)
        code = runner.run(plans)
    if report and code != 130:
        write_report(run_dir)
    return code


def write_report(run_dir: Path) -> Path:
    """Build the run's report and print where it is (stdout: the one thing a script may capture)."""
    from kvbench.report.build import DEFAULT_FORMATS, build_report

    report_dir = build_report(run_dir, list(DEFAULT_FORMATS))
    print(f"report: {report_dir / 'REPORT.md'} (also REPORT.html, summary.json)", flush=True)
    return report_dir


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _open_store(
    spec: ExperimentSpec, run_dir: Path, resume: bool, sut, catalog: ScenarioCatalog
) -> RunStore:
    snapshot = spec.model_dump(mode="json")
    kinds = catalog.kinds(spec.scenarios)  # what each scenario is, for the analysis
    if not resume:
        manifest = RunManifest(
            kvbench_version=manifest_versions(["kvbench"])["kvbench"],
            run_name=spec.name,
            created_at=utc_now_iso(),
            spec=snapshot,
            system_under_test=sut,
            host=host_facts(),
            versions=manifest_versions(VERSIONED_PACKAGES),
            strategy=spec.load.strategy,
            clock_origin_unix_s=time.time(),
            level_unit=_LEVEL_UNITS[spec.load.strategy],
            baseline_scenario="no-offload",
            scenario_kinds=kinds,
        )
        return RunStore.create(run_dir, manifest)
    store = RunStore.open(run_dir)
    if store.manifest.spec != snapshot:
        changed = sorted(
            k
            for k in set(snapshot) | set(store.manifest.spec)
            if snapshot.get(k) != store.manifest.spec.get(k)
        )
        if any(c.status == CellStatus.OK for c in store.manifest.cells):
            raise UserError(
                f"--resume: the spec differs from the one {run_dir} was started with "
                f"(fields: {', '.join(changed)}); finished cells would not be comparable"
            )
        store.manifest.spec = snapshot  # nothing finished yet: start over with the new spec
        store.manifest.cells = []
    store.manifest.finished_at = None
    store.manifest.scenario_kinds = kinds
    store.save_manifest()
    return store


class ExperimentRunner:
    def __init__(
        self,
        spec: ExperimentSpec,
        spec_path: Path,
        store: RunStore,
        target,
        catalog: ScenarioCatalog,
        hooks: RunnerHooks,
        console: Console,
    ):
        self.spec, self.spec_path, self.store, self.target = spec, spec_path, store, target
        self.catalog = catalog
        self.hooks, self.console = hooks, console
        origin = store.manifest.clock_origin_unix_s or time.time()
        from kvbench.loadgen.api import RunClock

        # seconds from the run's start, continued across --resume (wall clock bridges the processes)
        self.clock = RunClock(time.perf_counter() - (time.time() - origin))
        self.workloads: dict[tuple[str, int], tuple[Any, dict[str, Any]]] = {}
        self.any_failed = False
        self.progress = RunProgress(console, 0, 0)  # sized in run()

    def run(self, plans: list[CellPlan]) -> int:
        prepare = getattr(self.target, "prepare", None)  # the simulated target's worker processes
        done = sum(1 for p in plans if self.store.is_done(p.cell_id))
        self.progress = RunProgress(self.console, len(plans), done)
        try:
            if prepare is not None:
                pending = [p for p in plans if not self.store.is_done(p.cell_id)]
                prepare(
                    self.spec,
                    self.spec_path.parent,
                    pending,
                    self._level_plan,
                    catalog=self.catalog,
                )
            for _key, group in _groups(plans):
                pending = [p for p in group if not self.store.is_done(p.cell_id)]
                if pending:
                    self._run_group(pending)
        except KeyboardInterrupt:
            self.console.print(
                f"interrupted: results so far are kept; finish with "
                f"`kvbench run {self.spec_path} --out {self.store.run_dir} --resume`"
            )
            return 130
        finally:
            if hasattr(self.target, "close"):
                self.target.close()
        self.store.finish()
        self._print_summary(plans)
        return 1 if self._failed_cells(plans) else 0

    # ------------------------------------------------------------------ one (model, scenario)
    def _run_group(self, pending: list[CellPlan]) -> None:
        first = pending[0]
        try:
            deployment = self.target.up(
                first.model, first.scenario_name, first.scenario_params, catalog=self.catalog
            )
        except TargetError as err:
            self._fail_all(pending, f"target up failed: {err}", err.log_tail)
            return
        except (OSError, RuntimeError) as err:
            self._fail_all(pending, f"target up failed: {type(err).__name__}: {err}", None)
            return
        try:
            self.store.manifest.system_under_test = self.target.describe()
            self.store.save_manifest()
            endpoint = self._endpoint(deployment)
            self._check_lengths(pending, deployment)
            for plan in pending:
                endpoint = self._run_cell(plan, deployment, endpoint)
        finally:
            self.target.down(deployment)

    def _fail_all(self, plans: list[CellPlan], error: str, log_tail: str | None) -> None:
        self.console.print(f"[red]failed[/red] {plans[0].model} / {plans[0].scenario}: {error}")
        self.progress.position += len(plans)
        for plan in plans:
            self.store.record_failure(self._info(plan), error, log_tail)

    def _endpoint(self, deployment: Deployment):
        from kvbench.loadgen.api import EndpointConfig

        load = self.spec.load
        return EndpointConfig(
            base_url=deployment.base_url,
            model_name=deployment.served_model_name,
            api=load.api,
            stream=load.stream,
            request_timeout_s=load.request_timeout_s,
        )

    def _workload(self, plan: CellPlan, deployment: Deployment):
        key = (plan.model, plan.repeat)
        if key not in self.workloads:
            caps = KvCapacities.from_facts(deployment.facts)
            self.workloads[key] = build_workload(
                self.spec.workload,
                self.spec.seed + plan.repeat,
                caps,
                base_dir=self.spec_path.parent,
            )
        return self.workloads[key]

    def _check_lengths(self, plans: list[CellPlan], deployment: Deployment) -> None:
        """Reject (UserError) a workload whose longest conversation does not fit max_model_len."""
        max_len = deployment.facts.max_model_len
        if max_len is None:
            try:
                max_len = max_model_len_of(
                    fetch_models(deployment.base_url), deployment.served_model_name
                )
            except TargetError:
                max_len = None
        for plan in plans:
            workload, _ = self._workload(plan, deployment)
            has_text = any(
                t.question_text and not t.question_token_ids
                for c in workload.conversations
                for t in c.turns
            )
            if has_text and self.spec.load.api != "chat":
                raise UserError(
                    f"{self.spec_path}: load.api: the replay has text prompts; set load.api: chat"
                )
            needed = longest_conversation_tokens(workload)
            if max_len is None:
                self.console.print(
                    f"note: {deployment.served_model_name} does not report max_model_len; "
                    f"not checking the longest conversation ({needed} tokens)"
                )
                return
            if needed > max_len:
                raise UserError(
                    f"{self.spec_path}: workload: the longest conversation needs {needed} tokens "
                    f"(prefix + every turn's question and answer) but {deployment.served_model_name} "
                    f"serves max_model_len {max_len}"
                )

    # ------------------------------------------------------------------ one cell
    def _run_cell(self, plan: CellPlan, deployment: Deployment, endpoint):
        """Run one cell; returns the endpoint config for the next cell (with what a probe learned)."""
        if self.hooks.before_cell is not None:
            self.hooks.before_cell(plan)
        workload, capacity = self._workload(plan, deployment)
        info = self._info(plan)
        info.workload = WorkloadFacts(
            kind=workload.kind,
            conversations=len(workload.conversations),
            seed=self.spec.seed + plan.repeat,
            capacity=WorkingSetReport.model_validate(capacity),
        )
        info.deployment = DeploymentRecord(
            base_url=deployment.base_url,
            served_model_name=deployment.served_model_name,
            facts=deployment.facts,
        )
        try:
            level_plan = self._level_plan(plan)
        except RuntimeError as err:
            self.store.record_failure(info, str(err))
            self.progress.position += 1
            self.console.print(f"[red]cell {plan.cell_id} failed[/red]: {err}")
            return endpoint
        info.level_plan = LevelPlanFacts(
            strategy=level_plan.strategy,
            level=level_plan.level,
            duration_s=level_plan.duration_s,
            max_requests=level_plan.max_requests,
            warmup_s=level_plan.warmup_s,
            cooldown_s=level_plan.cooldown_s,
            max_concurrency=level_plan.max_concurrency,
            seed=level_plan.seed,
            stagger_s=level_plan.stagger_s,
        )
        writer = self.store.start_cell(info)
        self.progress.cell_started(plan, f"{level_plan.strategy} {level_plan.level:g}")
        inputs = CellInputs(
            self.spec,
            self.target,
            deployment,
            endpoint,
            self.clock,
            workload,
            level_plan,
            self.hooks,
        )
        try:
            status, error = self._run_with_progress(inputs, writer, plan)
        except KeyboardInterrupt:
            self.store.end_cell(
                writer, CellStatus.INTERRUPTED, "interrupted (Ctrl-C); --resume redoes this cell"
            )
            raise
        except UserError:
            self.store.end_cell(writer, CellStatus.FAILED, "bad input; see the error printed")
            raise
        except Exception as err:  # noqa: BLE001 - one cell's fault must not stop the matrix
            status, error = CellStatus.FAILED, f"{type(err).__name__}: {err}"
        self.store.end_cell(writer, status, error)
        self.progress.cell_finished(self.store.read_cell(plan.cell_id))
        return inputs.endpoint

    def _run_with_progress(self, inputs: CellInputs, writer, plan: CellPlan):
        from kvbench.loadgen.progress import CellProgress

        simulate = getattr(self.target, "run_cell", None)
        if simulate is not None:  # the simulated target runs the whole cell in virtual time and
            return simulate(inputs, writer, self.hooks.on_progress)  # shows the run's progress
        user_hook = self.hooks.on_progress
        with CellProgress(plan.cell_id, inputs.level_plan.max_requests) as bar:

            def on_progress(update) -> None:
                bar.update(update)
                self.progress.live(update)
                if user_hook is not None:
                    user_hook(update)

            inputs.hooks = RunnerHooks(self.hooks.before_cell, self.hooks.on_record, on_progress)
            return asyncio.run(run_cell(inputs, writer))

    def _level_plan(self, plan: CellPlan):
        from kvbench.loadgen.api import LevelPlan

        load, seed = self.spec.load, self.spec.seed + plan.repeat
        level = plan.level
        if plan.strategy == "throughput":
            level = float(load.max_concurrency or DEFAULT_THROUGHPUT_CONCURRENCY)
        elif load.strategy == "sweep" and plan.strategy == "constant":
            level = self._sweep_rate(plan)
        return LevelPlan(
            plan.strategy,
            level,
            load.duration_s,
            load.requests_per_level,
            warmup_s=load.warmup_s,
            cooldown_s=load.cooldown_s,
            max_concurrency=load.max_concurrency,
            seed=seed,
            stagger_s=load.effective_stagger_s(),
        )

    def _sweep_rate(self, plan: CellPlan) -> float:
        from kvbench.loadgen.api import sweep_rates

        measured = []
        for step in (1.0, 2.0):
            ref = plan.at_level(step, "")
            info = self.store.read_cell(ref.cell_id)
            rate = (
                info.summary.request_rate_rps
                if info and info.status == CellStatus.OK and info.summary
                else None
            )
            if not rate:
                raise RuntimeError(
                    f"sweep: step {step:g} ({'synchronous' if step == 1 else 'throughput'}) "
                    f"has no measured rate; the constant-rate steps need it"
                )
            measured.append(rate)
        rates = sweep_rates(measured[0], measured[1], self.spec.load.sweep_size)
        return float(rates[int(plan.level) - 1])

    def _info(self, plan: CellPlan) -> CellInfo:
        return CellInfo.new(plan.identity, plan.strategy, plan.scenario_params)

    # ------------------------------------------------------------------ the end
    def _failed_cells(self, plans: list[CellPlan]) -> list[str]:
        ids = {p.cell_id for p in plans}
        return [
            c.cell_id
            for c in self.store.manifest.cells
            if c.cell_id in ids and c.status != CellStatus.OK
        ]

    def _print_summary(self, plans: list[CellPlan]) -> None:
        from kvbench.loadgen.progress import SummaryRow, render_summary_table

        rows = []
        for plan in plans:
            info = self.store.read_cell(plan.cell_id)
            if info is None:
                continue
            rows.append(
                SummaryRow.from_summary(
                    plan.cell_id,
                    info.summary or CellSummary(),
                    model=plan.model,
                    scenario=plan.scenario,
                    level=plan.level,
                    repeat=plan.repeat,
                    status=info.status.value,
                )
            )
        self.console.print(render_summary_table(rows))


def _groups(plans: list[CellPlan]):
    groups: dict[tuple[str, str], list[CellPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.group_key, []).append(plan)
    return groups.items()
