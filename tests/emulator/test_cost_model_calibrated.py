"""Cost-model factors measured on real vLLM: CPU/GPU overlap, prefill starts, the connector's own
cost, the time a request spends before the scheduler sees it; profiles from files; compat mapping."""

import dataclasses
import statistics
from pathlib import Path

import pytest

from kvbench.calibrate.fit import _decode_work, decode_points, read_probe
from kvbench.emulator.api.args import parse_serve_args
from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.compat import compat_for_version
from kvbench.emulator.engine.cost_model import CostModel, CostParams
from kvbench.emulator.engine.engine import EmulatedEngine
from kvbench.emulator.engine.interface import EngineRequest
from kvbench.emulator.engine.scheduler import StepWork
from kvbench.errors import UserError
from kvbench.spec.catalogs import get_hardware, get_model

MODEL = get_model("Qwen/Qwen3-0.6B")
H200 = get_hardware("H200")
DECODE = StepWork(
    num_reqs=8,
    num_tokens=8,
    num_sampled=8,
    attended_pairs=8 * 200,
    kv_tokens_read=8 * 200,
    num_kv_tokens_written=8,
)


def test_overlap_takes_the_larger_of_gpu_and_cpu_work_not_their_sum():
    params = dataclasses.replace(CostParams(), step_overhead_s=2e-3, per_request_overhead_s=0.0)
    serial = CostModel(MODEL, H200, 1, params).step_cost(DECODE)
    overlapped = CostModel(MODEL, H200, 1, dataclasses.replace(params, cpu_overlap=True)).step_cost(
        DECODE
    )
    assert serial.duration_s == pytest.approx(serial.gpu_s + 2e-3)
    assert overlapped.duration_s == pytest.approx(max(serial.gpu_s, 2e-3))
    assert overlapped.duration_s < serial.duration_s


def test_layer_latency_adds_to_the_gpu_time_per_layer_whatever_the_work():
    from kvbench.calibrate.fit import _prefill_work

    params = dataclasses.replace(CostParams(), layer_latency_s=30e-6)
    for model in (MODEL, get_model("Qwen/Qwen3-14B")):
        for work in (DECODE, _prefill_work(2048)):
            plain = CostModel(model, H200, 1, CostParams()).step_cost(work)
            with_layers = CostModel(model, H200, 1, params).step_cost(work)
            assert with_layers.layer_s == pytest.approx(model.num_layers * 30e-6)
            assert with_layers.gpu_s == pytest.approx(plain.gpu_s + model.num_layers * 30e-6)
            assert with_layers.overhead_s == plain.overhead_s


def test_a_step_beyond_the_cuda_graph_size_holds_its_eager_gpu_time_under_any_cpu_work():
    from kvbench.calibrate.fit import _prefill_work

    params = dataclasses.replace(
        CostParams(), cpu_overlap=True, eager_step_gpu_s=8e-3, eager_step_overhead_s=1e-3
    )
    plain_params = dataclasses.replace(params, eager_step_gpu_s=0.0)
    for model in (MODEL, get_model("Qwen/Qwen3-14B")):
        graph = _prefill_work(int(params.cudagraph_max_tokens))  # fits a captured graph
        eager = _prefill_work(int(params.cudagraph_max_tokens) + 1)
        with_gpu = CostModel(model, H200, 1, params)
        plain = CostModel(model, H200, 1, plain_params)
        assert with_gpu.step_cost(graph) == plain.step_cost(graph)
        assert with_gpu.step_cost(eager).gpu_s == pytest.approx(plain.step_cost(eager).gpu_s + 8e-3)
        # GPU time, not CPU: the step takes at least it even where the CPU work is the longer part
        assert with_gpu.step_cost(eager).overhead_s == plain.step_cost(eager).overhead_s
        assert with_gpu.step_duration_s(eager) >= plain.step_cost(eager).gpu_s + 8e-3


def test_connector_costs_apply_only_with_a_connector():
    params = dataclasses.replace(
        CostParams(),
        connector_step_overhead_s=0.5e-3,
        connector_prefill_overhead_s=4e-3,
        prefill_request_overhead_s=1e-3,
        store_stall_bytes_per_s=1e10,
    )
    prefill = dataclasses.replace(DECODE, num_prefill_starts=2)
    plain = CostModel(MODEL, H200, 1, params)
    offload = CostModel(MODEL, H200, 1, params, with_connector=True)
    assert offload.step_duration_s(DECODE) - plain.step_duration_s(DECODE) == pytest.approx(0.5e-3)
    extra = offload.step_duration_s(prefill) - plain.step_duration_s(prefill)
    assert extra == pytest.approx(0.5e-3 + 2 * 4e-3)
    assert plain.step_duration_s(prefill) - plain.step_duration_s(DECODE) == pytest.approx(2e-3)
    assert offload.store_stall_s(10**8) == pytest.approx(0.01)
    # with async scheduling the prefill starts' CPU work hides under a long GPU step
    overlapped = dataclasses.replace(
        params, cpu_overlap=True, step_overhead_s=0.0, per_request_overhead_s=0.0
    )
    long_gpu = dataclasses.replace(prefill, num_tokens=8192, attended_pairs=8192 * 4096)
    model = CostModel(MODEL, H200, 1, overlapped, with_connector=True)
    cost = model.step_cost(long_gpu)
    assert cost.gpu_s > cost.overhead_s == pytest.approx(0.5e-3 + 2 * (4e-3 + 1e-3))
    assert cost.duration_s == pytest.approx(cost.gpu_s)
    assert CostModel(MODEL, H200, 1, CostParams()).store_stall_s(10**8) == 0.0


def _h200_engine() -> EmulatedEngine:
    """Qwen3-0.6B on the shipped H200 profile, as `kvbench emulate serve` builds it."""
    options = parse_serve_args(["Qwen/Qwen3-0.6B", "--hardware", "H200-vLLM-0.26"], {})
    return build_engine(options.engine_args)


def test_a_fresh_request_waits_request_overhead_before_it_is_scheduled():
    engine = _h200_engine()
    overhead = engine.cost.request_delay_s(64, 0.0)
    assert overhead > 0  # the calibrated profile carries it
    engine.add_request(EngineRequest("r", list(range(100, 164)), 4, arrival_s=10.0))
    assert engine.step(10.0).num_scheduled_tokens == 0
    assert engine.step(10.0 + overhead + 1e-6).num_scheduled_tokens == 64


def test_request_delay_grows_with_prompt_and_output_rate_and_keeps_arrival_order():
    engine = _h200_engine()
    engine.cost.params = dataclasses.replace(
        engine.cost.params,
        request_overhead_s=0.010,
        request_overhead_per_prompt_token_s=1e-6,
        frontend_lag_s_per_output_tok_s=2e-6,
    )
    cost = engine.cost
    assert cost.request_delay_s(1000, 0.0) == pytest.approx(0.011)
    assert cost.request_delay_s(1000, 5000.0) == pytest.approx(0.021)
    # a long prompt first, a short one right after: the API server hands them on in order
    engine.add_request(EngineRequest("long", list(range(100, 4100)), 4, arrival_s=1.0))
    engine.add_request(EngineRequest("short", list(range(100, 116)), 4, arrival_s=1.0))
    long_req, short_req = engine.requests["long"], engine.requests["short"]
    assert long_req.schedulable_s == pytest.approx(1.014)
    assert short_req.schedulable_s == long_req.schedulable_s
    assert engine.step(1.012).num_scheduled_tokens == 0


def test_request_delay_grows_with_the_requests_already_in_flight():
    """The API server's time per new request grows with the streams it serves (H100 probes)."""
    engine = _h200_engine()
    engine.cost.params = dataclasses.replace(
        engine.cost.params,
        request_overhead_s=0.005,
        request_overhead_per_prompt_token_s=0.0,
        frontend_lag_s_per_output_tok_s=0.0,
        frontend_lag_s_per_stream=1e-3,
    )
    assert engine.cost.request_delay_s(64, 0.0, streams_in_flight=10) == pytest.approx(0.015)
    for i in range(3):  # arrivals 0.1 s apart: each finds the earlier ones still in the engine
        arrival_s = 1.0 + 0.1 * i
        engine.add_request(
            EngineRequest(f"r{i}", list(range(100 + 50 * i, 164 + 50 * i)), 4, arrival_s)
        )
        assert engine.requests[f"r{i}"].schedulable_s == pytest.approx(arrival_s + 0.005 + i * 1e-3)


def test_output_rate_follows_the_steps_tokens():
    engine = _h200_engine()
    for i in range(8):
        engine.add_request(
            EngineRequest(f"r{i}", list(range(100 + i, 164 + i)), 3000, arrival_s=0.0)
        )
    now_s = 0.5
    for _ in range(2000):
        now_s += engine.step(now_s).duration_s
    step_s = engine.step(now_s).duration_s
    assert engine.output_rate_tok_s == pytest.approx(8 / step_s, rel=0.1)


def test_the_output_rate_decays_while_the_engine_idles():
    engine = _h200_engine()
    for i in range(8):
        engine.add_request(EngineRequest(f"r{i}", list(range(100 + i, 164 + i)), 64, arrival_s=0.0))
    now_s = 0.5
    while engine.has_unfinished_requests():
        now_s += engine.step(now_s).duration_s
    busy_rate = engine.output_rate_tok_s
    assert busy_rate > 1000
    # a request a second after the last step meets an API server that streams nothing any more
    late = EngineRequest("late", list(range(300, 364)), 4, arrival_s=now_s + 1.0)
    delay_busy_s = engine.cost.request_delay_s(64, busy_rate)
    engine.add_request(late)
    delay_s = engine.requests["late"].schedulable_s - late.arrival_s
    assert delay_s == pytest.approx(engine.cost.request_delay_s(64, 0.0), abs=1e-6)
    assert delay_s < delay_busy_s


def test_hardware_profile_from_a_file_and_its_bad_keys(tmp_path):
    good = tmp_path / "h.yaml"
    good.write_text(
        "name: mine\nbf16_flops_per_s: 8.0e14\nhbm_gib: 80\nhbm_bytes_per_s: 3.0e12\n"
        "host_link_bytes_per_s: 5.0e10\ntp_link_bytes_per_s: 4.5e11\nvllm_version: 0.26.0\n"
        "cost_model: {step_overhead_s: 0.002, cpu_overlap: true}\n"
    )
    profile = get_hardware(str(good))
    assert profile.cost_overrides == {"step_overhead_s": 0.002, "cpu_overlap": True}
    from kvbench.emulator.engine.build import cost_params_for

    assert cost_params_for(profile).step_overhead_s == 0.002
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("step_overhead_s", "step_overhed_s"))
    with pytest.raises(UserError, match="cost_model.step_overhed_s"):
        get_hardware(str(bad))
    with pytest.raises(UserError, match="cannot read profile"):
        get_hardware(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    ("version", "profile"),
    [
        ("0.26.0", "0.26"),
        ("0.28.1", "0.26"),
        ("0.32.0", "0.32"),
        ("0.11.2", "0.11"),
        ("0.9.0", "0.11"),
    ],
)
def test_compat_follows_the_real_version(version, profile):
    assert compat_for_version(version) == profile


def test_emulated_launcher_passes_the_profiles_vllm_version():
    from kvbench.emulator.stack import EmulatedLauncher, EngineSettings

    settings = EngineSettings(model="Qwen/Qwen3-0.6B", served_model_name="Qwen/Qwen3-0.6B")
    argv = EmulatedLauncher(hardware="H200-vLLM-0.26").command(settings, ["--port", "1"])
    assert argv[argv.index("--vllm-compat") + 1] == "0.26"
    chosen = EmulatedLauncher(hardware="H200-vLLM-0.26").command(
        settings, ["--vllm-compat", "0.32"]
    )
    assert chosen.count("--vllm-compat") == 1
    assert "--vllm-compat" not in EmulatedLauncher(hardware="H200").command(settings, [])


H100_PROBES = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu-h100"


@pytest.mark.parametrize(
    "size, bound",
    [("8B", 0.08), ("14B", 0.08), ("0.6B", 0.12)],  # 0.6B: CPU-bound steps, noisier probe
)
def test_the_h100_profile_predicts_the_real_h100_decode_steps(size, bound):
    """The shipped H100-vLLM-0.26 profile against the real H100 probe of each size (ITL at batch
    1..64, contexts 128..4,096): its weight stream was refit on cells, not on these points."""
    run = read_probe(H100_PROBES / f"probe-Qwen3-{size}-no-offload.jsonl.gz")
    hardware = get_hardware("H100-vLLM-0.26")
    params = dataclasses.replace(CostParams(), **hardware.cost_overrides)
    model = CostModel(get_model(run.model), hardware, 1, params)
    errors = [
        abs(model.step_duration_s(_decode_work(p.batch, p.context_tokens)) / p.itl_s - 1)
        for p in decode_points(run)
        if p.batch <= 64
    ]
    assert len(errors) >= 12
    assert statistics.median(errors) < bound
