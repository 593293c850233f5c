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

import yaml

from kvbench.calibrate.fit import FitReport, ProbeRun, fit_profile, read_probe
from kvbench.calibrate.probe import Probe, ProbePlan, ProbePoint, ProbeServer
from kvbench.errors import UserError
from kvbench.spec.catalogs import HardwareProfile, get_hardware
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


def profile_entry(report: FitReport, base: HardwareProfile, name: str, source: str) -> dict:
    """One hardware.yaml entry: the base profile's rates, the measured host link, the factors."""
    host_link = report.host_link_bytes_per_s or base.host_link_bytes_per_s
    return {
        "name": name,
        "bf16_flops_per_s": base.bf16_flops_per_s,
        "hbm_gib": base.hbm_gib,
        "hbm_bytes_per_s": base.hbm_bytes_per_s,
        "host_link_bytes_per_s": float(f"{host_link:.3g}"),
        "tp_link_bytes_per_s": base.tp_link_bytes_per_s,
        "vllm_version": report.vllm_version,
        "source": source,
        "cost_model": _changed(report),
    }


def _changed(report: FitReport) -> dict:
    """The factors that differ from the cost model's defaults (the fit's findings)."""
    defaults = type(report.params)()
    changed = {}
    for item in dataclasses.fields(report.params):
        value = getattr(report.params, item.name)
        if item.name != "non_torch_bytes" and value != getattr(defaults, item.name):
            changed[item.name] = round(value, 9) if isinstance(value, float) else value
    return changed


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
    models = ", ".join(sorted({run.model for run in runs}))
    source = (
        f"kvbench calibrate: {len(runs)} probe(s) of real vLLM {report.vllm_version or '?'} "
        f"({models}); rates from {base_profile.name}; fit error decode ITL "
        f"{report.errors['decode_itl']:.1%}, prefill {report.errors['prefill_time']:.1%}"
    )
    entry = profile_entry(report, base_profile, name or f"{base_profile.name}-calibrated", source)
    out.write_text(yaml.safe_dump(entry, sort_keys=False))
    return report
