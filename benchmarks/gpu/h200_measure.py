"""One model's measurements on the GPU machine, in one command: for each scenario of the validation
spec, kvbench's vllm target starts real vLLM once; right after the start the calibration probe
(kvbench.calibrate.probe) measures its operating points on that engine, then the spec's cells run
on the same engine (each cell resets every cache first, so the probe leaves nothing behind).

Usage (on the GPU machine, vLLM importable, kvbench on PYTHONPATH):
    python benchmarks/gpu/h200_measure.py SPEC.yaml OUT_DIR [--probe-scenarios a,b]
Writes OUT_DIR/probe-<model>-<scenario>.jsonl (one point a line, as measured) and the run
directory OUT_DIR/run/. Starting an engine once per scenario (not once for the probe and once for
the cells) halves the vLLM starts, about 80 s each on an H200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import kvbench.targets as targets
from kvbench.calibrate.probe import Probe, ProbePlan, ProbePoint, ProbeServer
from kvbench.errors import UserError
from kvbench.experiment.runner import run_experiment_cli
from kvbench.targets.vllm import VllmTarget

OUT_DIR: Path = Path(".")
PROBE_SCENARIOS: set[str] = set()
PLANS = {
    "full": ProbePlan(decode_batch_sizes=(1, 4, 16, 32, 64, 128, 256)),
    # a smoke test of the whole path (e.g. against the emulator standing in for vLLM)
    "quick": ProbePlan(
        overhead_requests=4,
        prefill_prompt_tokens=(64, 1024),
        prefill_repeats=2,
        cached_fractions=(0.0, 0.5),
        cached_repeats=1,
        decode_batch_sizes=(1, 16),
        decode_contexts=(128,),
        throughput_concurrency=8,
        throughput_duration_s=2.0,
        reload_prompt_tokens=(1024,),
        reload_repeats=1,
    ),
}
PLAN = PLANS["full"]


class ProbingVllmTarget(VllmTarget):
    """The vllm target, plus one probe of every new engine before its cells run."""

    def up(self, model, scenario, scenario_params, *, catalog=None):
        deployment = super().up(model, scenario, scenario_params, catalog=catalog)
        if scenario in PROBE_SCENARIOS:
            self._probe(deployment, model, scenario)
        return deployment

    def _probe(self, deployment, model: str, scenario: str) -> None:
        facts = deployment.facts
        server = ProbeServer(
            base_url=deployment.api_urls[0],
            model_name=deployment.served_model_name,
            gpu_kv_capacity_tokens=(facts.gpu_kv_capacity_tokens_per_engine or [None])[0],
            block_size=facts.gpu_block_size,
            has_cpu_tier=bool(facts.cpu_kv_capacity_tokens),
        )
        path = OUT_DIR / f"probe-{model.split('/')[-1]}-{scenario}.jsonl"
        with path.open("a") as sink:
            header = {
                "kind": "server",
                "model": model,
                "scenario": scenario,
                "details": facts.model_dump(mode="json"),
                "server": server.__dict__,
            }
            sink.write(json.dumps(header, default=str) + "\n")
            sink.flush()

            def on_point(point: ProbePoint) -> None:
                sink.write(json.dumps({"kind": "point", **point.to_json()}) + "\n")
                sink.flush()
                print(
                    f"probe {scenario} {point.phase} {point.label}: {point.duration_s:.2f}s"
                    + (f" (skipped: {point.skipped})" if point.skipped else ""),
                    file=sys.stderr,
                    flush=True,
                )

            started = time.monotonic()
            asyncio.run(Probe(server, PLAN, on_point).run())
            print(f"probe {scenario}: {time.monotonic() - started:.1f}s", file=sys.stderr)


def main() -> int:
    global OUT_DIR, PROBE_SCENARIOS, PLAN
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("out")
    parser.add_argument("--probe-scenarios", default="no-offload,native-offload")
    parser.add_argument("--plan", choices=sorted(PLANS), default="full")
    args = parser.parse_args()
    PLAN = PLANS[args.plan]
    OUT_DIR = Path(args.out)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    PROBE_SCENARIOS = {name for name in args.probe_scenarios.split(",") if name}
    targets._TARGET_CLASSES["vllm"] = f"{__name__}:ProbingVllmTarget"
    try:
        return run_experiment_cli(
            Path(args.spec), OUT_DIR / "run", resume=False, only=[], dry_run=False
        )
    except UserError as err:  # e.g. OUT/run already holds a run: one line, exit 2
        print(f"h200_measure: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
