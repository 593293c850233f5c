"""The fit recovers the cost-model factors that produced a probe, and reads the shipped H200 probes."""

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from kvbench.calibrate.fit import (
    DecodePoint,
    PrefillPoint,
    _decode_work,
    fit_decode,
    read_probe,
)
from kvbench.emulator.engine.cost_model import CostModel, CostParams
from kvbench.spec.catalogs import get_hardware, get_model

REPO = Path(__file__).resolve().parents[2]
H200 = get_hardware("H200")


def test_decode_fit_recovers_overheads_layer_latency_and_overlap_from_cost_model_points():
    truth = dataclasses.replace(
        CostParams(),
        cpu_overlap=True,
        step_overhead_s=1.5e-3,
        per_request_overhead_s=40e-6,
        weight_memory_efficiency=0.8,
        kv_memory_efficiency=0.6,
        layer_latency_s=30e-6,
    )
    points = []
    for model in ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B"):
        cost = CostModel(get_model(model), H200, 1, truth)
        for batch in (1, 4, 16, 64, 256):
            for context in (128, 4096):
                itl = cost.step_duration_s(_decode_work(batch, context))
                points.append(DecodePoint(model, batch, context, itl))
    fitted, error = fit_decode(points, H200, CostParams())
    assert error < 0.02
    assert fitted.cpu_overlap
    assert fitted.step_overhead_s == pytest.approx(1.5e-3, abs=0.1e-3)
    assert fitted.per_request_overhead_s == pytest.approx(40e-6, abs=3e-6)
    assert fitted.weight_memory_efficiency == pytest.approx(0.8, abs=0.05)
    assert fitted.layer_latency_s == pytest.approx(30e-6, abs=4e-6)


def test_decode_fit_leaves_out_points_beyond_the_batch_limit():
    """A point of more running requests than DECODE_FIT_MAX_BATCH (the H200's 256-request steps
    took twice the line) must not move the fitted terms."""
    truth = dataclasses.replace(
        CostParams(), cpu_overlap=True, step_overhead_s=1.5e-3, per_request_overhead_s=40e-6
    )
    cost = CostModel(get_model("Qwen/Qwen3-8B"), H200, 1, truth)
    points = [
        DecodePoint("Qwen/Qwen3-8B", b, 128, cost.step_duration_s(_decode_work(b, 128)))
        for b in (1, 4, 16, 64, 128)
    ]
    far_off = DecodePoint("Qwen/Qwen3-8B", 256, 128, 10 * points[-1].itl_s)
    without, _ = fit_decode(points, H200, CostParams())
    with_far_off, _ = fit_decode([*points, far_off], H200, CostParams())
    assert with_far_off == without


def test_read_probe_skips_skipped_points_and_reads_gzip(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as sink:
        server = {"has_cpu_tier": True}
        sink.write(
            json.dumps(
                {
                    "kind": "server",
                    "model": "Qwen/Qwen3-8B",
                    "scenario": "native-offload",
                    "details": {"server_version": "0.26.0"},
                    "server": server,
                }
            )
            + "\n"
        )
        sink.write(json.dumps({"kind": "point", "phase": "decode", "skipped": "too big"}) + "\n")
        sink.write(json.dumps({"kind": "point", "phase": "prefill", "skipped": None}) + "\n")
    run = read_probe(path)
    assert (run.model, run.scenario, run.has_cpu_tier, run.server_version) == (
        "Qwen/Qwen3-8B",
        "native-offload",
        True,
        "0.26.0",
    )
    assert [p["phase"] for p in run.points] == ["prefill"]


def test_shipped_h200_probes_hold_decode_and_prefill_points_of_every_model():
    from kvbench.calibrate.fit import decode_points, prefill_points

    runs = [
        read_probe(p)
        for p in sorted((REPO / "benchmarks/results/gpu-h200").glob("probe-*.jsonl.gz"))
    ]
    plain = {run.model: run for run in runs if not run.has_cpu_tier}
    assert set(plain) == {"Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B"}
    assert all(run.server_version == "0.26.0" for run in runs)
    for run in plain.values():
        assert decode_points(run) and prefill_points(run)


def test_request_delay_fit_recovers_the_prompt_line_and_the_streaming_lag():
    from kvbench.calibrate.fit import ThroughputPoint, _prefill_work, fit_request_delay

    params = dataclasses.replace(CostParams(), cpu_overlap=True, step_overhead_s=1.5e-3)
    model = "Qwen/Qwen3-0.6B"
    cost = CostModel(get_model(model), H200, 1, params)
    fixed_s, per_token_s, lag = 0.004, 3e-6, 5e-6
    prefill = []
    for prompt in (64, 256, 1024, 4096):
        step_s = cost.step_duration_s(_prefill_work(prompt))
        ttft_s = 0.001 + step_s + fixed_s + per_token_s * prompt
        prefill.append(PrefillPoint(model, prompt, prefill_s=step_s, ttft_s=ttft_s, queue_s=0.001))
    # under load: queue and reported prefill grow; what is left beyond the lone line is the lag
    rate = 8000.0
    outside_s = fixed_s + per_token_s * 512 + lag * rate
    busy = ThroughputPoint(model, 512, 0.020 + 0.045 + outside_s, 0.020, 0.045, rate)
    fit = fit_request_delay(prefill, [busy], H200, params)
    assert fit.fixed_s == pytest.approx(fixed_s, abs=1e-5)
    assert fit.per_prompt_token_s == pytest.approx(per_token_s, rel=0.01)
    assert fit.lag_s_per_output_tok_s == pytest.approx(lag, rel=0.01)
    # a prompt line that falls (noise) is not extrapolated: a flat median instead, lag kept >= 0
    falling = [dataclasses.replace(p, ttft_s=p.ttft_s - 4e-6 * p.prompt_tokens) for p in prefill]
    idle = dataclasses.replace(busy, ttft_s=0.0)
    flat = fit_request_delay(falling, [idle], H200, params)
    assert flat.per_prompt_token_s == 0.0 and flat.lag_s_per_output_tok_s == 0.0


def test_prefill_fit_tells_the_eager_steps_gpu_time_from_its_cpu_work():
    """Prompts above the CUDA-graph size pay both; a small model's short kernels show the CPU
    launch work, a large model's the GPU time (hidden CPU work would not slow it)."""
    from kvbench.calibrate.fit import _prefill_work, fit_prefill

    truth = dataclasses.replace(
        CostParams(),
        cpu_overlap=True,
        linear_efficiency=0.8,
        attention_efficiency=0.6,
        eager_step_overhead_s=10e-3,
        eager_step_gpu_s=6e-3,
    )
    offset_s = 5e-3  # the first token's way back
    points = []
    for model in ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B"):
        cost = CostModel(get_model(model), H200, 1, truth)
        for prompt in (64, 256, 1024, 2048, 4096, 8192):
            step_s = cost.step_duration_s(_prefill_work(prompt))
            points.append(PrefillPoint(model, prompt, step_s + offset_s, step_s + offset_s, 0.0))
    fitted, error = fit_prefill(points, H200, dataclasses.replace(CostParams(), cpu_overlap=True))
    assert error < 0.01
    assert fitted.eager_step_gpu_s == pytest.approx(6e-3, abs=1e-3)
    assert fitted.eager_step_overhead_s == pytest.approx(10e-3, abs=1e-3)
    assert fitted.linear_efficiency == pytest.approx(0.8, abs=0.05)
