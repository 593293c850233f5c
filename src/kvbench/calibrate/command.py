"""`kvbench calibrate`: probe real vLLM, fit the cost model, write a hardware profile.

Sources (one of):
- `--url URL [--url URL2]`: running vLLM servers (one without a connector; one with a CPU tier
  for the offload factors); each is probed once;
- `--spec SPEC`: a spec with a `vllm` target: each of its models is started per scenario
  (no-offload, and native-offload when the spec lists it), probed, stopped;
- `--probe FILE ...`: probe files written earlier (JSON lines, .gz allowed), fitted only.
Probe files are written next to the profile (`<out stem>-probe-<model>-<scenario>.jsonl`) as the
points are measured. The profile is one catalog entry (spec/catalog/hardware.yaml's format) whose
`cost_model` holds the fitted factors; `hardware: PATH` in an emulated or simulated target uses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from kvbench.calibrate.fit import FitReport, ProbeRun, fit_profile, read_probe
from kvbench.calibrate.probe import Probe, ProbePlan, ProbePoint, ProbeServer
from kvbench.calibrate.profile import profile_entry, write_profile
from kvbench.calibrate.replay_fit import fit_request_path
from kvbench.errors import UserError
from kvbench.spec.catalogs import get_hardware
from kvbench.targets.local_stack import fetch_text, gpu_capacity_tokens

OFFLOAD_SCENARIO = "native-offload"


def probe_to_file(server: ProbeServer, path: Path, header: dict, plan: ProbePlan) -> Path:
    with path.open("w") as sink:
        sink.write(json.dumps({"kind": "server", **header, "server": server.__dict__}) + "\n")

        def on_point(point: ProbePoint) -> None:
            sink.write(json.dumps({"kind": "point", **point.to_json()}) + "\n")
            sink.flush()

        asyncio.run(Probe(server, plan, on_point).run())
    return path


def _server_of(url: str) -> tuple[ProbeServer, dict]:
    status, body = fetch_text(f"{url}/v1/models")
    if status != 200:
        raise UserError(f"--url: {url}/v1/models answered {status or body}")
    model = json.loads(body)["data"][0]["id"]
    metrics = fetch_text(f"{url}/metrics")[1]
    version = fetch_text(f"{url}/version")
    offload = "vllm:kv_offload" in metrics  # OffloadingConnector's own metrics
    server = ProbeServer(url, model, gpu_capacity_tokens(metrics), None, offload)
    header = {
        "model": model,
        "scenario": OFFLOAD_SCENARIO if offload else "no-offload",
        "details": {
            "server_version": json.loads(version[1]).get("version") if version[0] == 200 else None
        },
    }
    return server, header


def probe_urls(urls: list[str], out: Path, plan: ProbePlan) -> list[Path]:
    paths = []
    for url in urls:
        server, header = _server_of(url.rstrip("/"))
        name = f"{out.stem}-probe-{header['model'].split('/')[-1]}-{header['scenario']}.jsonl"
        paths.append(probe_to_file(server, out.with_name(name), header, plan))
    return paths


def probe_spec(spec_path: Path, out: Path, plan: ProbePlan) -> list[Path]:
    from kvbench.spec.experiment import load_spec
    from kvbench.spec.scenarios import catalog_for_spec
    from kvbench.targets.vllm import VllmTarget

    spec = load_spec(spec_path)
    if spec.target.kind != "vllm":
        raise UserError(
            f"--spec: {spec_path}: calibrate needs a vllm target, not {spec.target.kind}"
        )
    catalog = catalog_for_spec(spec)
    scenarios = ["no-offload"] + ([OFFLOAD_SCENARIO] if OFFLOAD_SCENARIO in spec.scenarios else [])
    params = {name: values[0] for name, values in spec.scenario_params.items() if values}
    target = VllmTarget(spec.target, run_dir=out.parent / f"{out.stem}-logs", seed=spec.seed)
    paths = []
    for model in spec.models:
        for scenario in scenarios:
            deployment = target.up(model, scenario, params, catalog=catalog)
            try:
                facts = deployment.facts
                server = ProbeServer(
                    deployment.api_urls[0],
                    deployment.served_model_name,
                    (facts.gpu_kv_capacity_tokens_per_engine or [None])[0],
                    facts.gpu_block_size,
                    bool(facts.cpu_kv_capacity_tokens),
                )
                header = {
                    "model": model,
                    "scenario": scenario,
                    "details": facts.model_dump(mode="json"),
                }
                name = f"{out.stem}-probe-{model.split('/')[-1]}-{scenario}.jsonl"
                paths.append(probe_to_file(server, out.with_name(name), header, plan))
            finally:
                target.down(deployment)
    return paths


def run_calibrate(
    out: Path,
    urls: list[str],
    spec: Path | None,
    probes: list[Path],
    base: str,
    name: str | None,
    quick: bool,
) -> FitReport:
    if sum(bool(x) for x in (urls, spec, probes)) != 1:
        raise UserError("calibrate: give exactly one of --url, --spec or --probe")
    plan = ProbePlan(decode_batch_sizes=(1, 4, 16, 32, 64, 128, 256))
    if quick:
        plan = ProbePlan(
            prefill_prompt_tokens=(64, 1024, 4096),
            prefill_repeats=2,
            decode_batch_sizes=(1, 16),
            decode_contexts=(128,),
            throughput_duration_s=2.0,
            reload_prompt_tokens=(1024,),
            reload_repeats=1,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if urls:
        probes = probe_urls(urls, out, plan)
    elif spec is not None:
        probes = probe_spec(spec, out, plan)
    for path in probes:
        if not path.is_file():
            raise UserError(f"--probe: no such file {path}")
    runs: list[ProbeRun] = [read_probe(path) for path in probes]
    base_profile = get_hardware(base)
    report = fit_profile(runs, base_profile)
    replayed = fit_request_path(
        runs, base_profile, report.params, report.host_link_bytes_per_s, report.vllm_version
    )
    if replayed is not None:
        report = dataclasses.replace(
            report,
            params=replayed.params,
            errors=report.errors
            | {
                "lone_ttft": replayed.errors.lone_ttft,
                "throughput_ttft": replayed.errors.throughput_ttft,
                "throughput_tok_s": replayed.errors.throughput_tok_s,
                "throughput_tpot": replayed.errors.throughput_tpot,
            },
        )
    models = ", ".join(sorted({run.model for run in runs}))
    source = (
        f"kvbench calibrate: {len(runs)} probe(s) of real vLLM {report.vllm_version or '?'} "
        f"({models}); rates from {base_profile.name}; fit error {_errors_text(report)}"
    )
    entry = profile_entry(
        report.params,
        report.host_link_bytes_per_s,
        report.vllm_version,
        base_profile,
        name or f"{base_profile.name}-calibrated",
        source,
    )
    write_profile(entry, out)
    return report


ERROR_NAMES = {
    "decode_itl": "decode ITL",
    "prefill_time": "prefill",
    "lone_ttft": "lone TTFT (replayed)",
    "throughput_ttft": "closed-loop TTFT (replayed)",
    "throughput_tok_s": "closed-loop tok/s (replayed)",
    "throughput_tpot": "closed-loop TPOT (replayed)",
}


def _errors_text(report: FitReport) -> str:
    return ", ".join(
        f"{ERROR_NAMES.get(key, key)} {value:.1%}" for key, value in report.errors.items()
    )
