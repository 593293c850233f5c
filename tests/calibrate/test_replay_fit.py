"""calibrate's replay: the probe's points on the simulated stack, and the request-path fit that
recovers the terms a probe was made with."""

import dataclasses

import pytest

from kvbench.calibrate.fit import ProbeRun
from kvbench.calibrate.profile import profile_entry, write_profile
from kvbench.calibrate.replay import ProbedServer, Replayer
from kvbench.calibrate.replay_fit import fit_request_path
from kvbench.emulator.api.driver import IDLE_POLL_S
from kvbench.emulator.engine.cost_model import CostParams
from kvbench.simulate.engine_node import IDLE_WAKE_S
from kvbench.spec.catalogs import get_hardware

MODEL = "Qwen/Qwen3-0.6B"
H200 = get_hardware("H200")
SERVER = ProbedServer(MODEL, num_gpu_blocks=4096)
GPU_TERMS = dataclasses.replace(CostParams(), cpu_overlap=True, step_overhead_s=1.0e-3)
LONE_PROMPTS = (64, 1024, 4096)
LOOP = (16, 512, 32, 1.0)  # concurrency, prompt tokens, output tokens, send window s


def _profile(tmp_path, params: CostParams, name: str):
    entry = profile_entry(params, None, None, H200, name, "test")
    return write_profile(entry, tmp_path / f"{name}.yaml")


def test_a_lone_request_waits_its_delay_beyond_the_engines_wake_up(tmp_path):
    """A delay up to the engine's wake-up (IDLE_WAKE_S) is hidden by it; each second beyond it
    is a second more of TTFT, to within an idle poll (so the lone line is fitted in rounds, not by one subtraction)."""

    def lone_s(fixed_s: float, per_token_s: float) -> list[float]:
        params = dataclasses.replace(
            GPU_TERMS, request_overhead_s=fixed_s, request_overhead_per_prompt_token_s=per_token_s
        )
        profile = _profile(tmp_path, params, f"delay-{fixed_s}-{per_token_s}")
        return Replayer(SERVER, profile).lone_ttfts_s(list(LONE_PROMPTS), 16)

    bare = lone_s(0.0, 0.0)
    assert lone_s(0.8 * IDLE_WAKE_S, 0.0) == bare
    assert all(s > 0.001 for s in bare)  # the modelled step and the stack's own delays
    short, longer = lone_s(0.006, 1e-6), lone_s(0.010, 2e-6)
    for prompt, short_s, longer_s in zip(LONE_PROMPTS, short, longer):
        # an idle engine polls every IDLE_POLL_S for a request that is not schedulable yet
        assert longer_s - short_s == pytest.approx(0.004 + 1e-6 * prompt, abs=IDLE_POLL_S)


def test_closed_loop_slows_with_the_lag_per_stream_and_is_deterministic(tmp_path):
    plain = Replayer(SERVER, _profile(tmp_path, GPU_TERMS, "plain")).closed_loop(*LOOP)
    lagged_params = dataclasses.replace(GPU_TERMS, frontend_lag_s_per_stream=1e-3)
    lagged = Replayer(SERVER, _profile(tmp_path, lagged_params, "lagged")).closed_loop(*LOOP)
    again = Replayer(SERVER, _profile(tmp_path, lagged_params, "again")).closed_loop(*LOOP)
    assert lagged == again
    assert plain.requests >= LOOP[0] and plain.output_tok_s > 0
    # every request waits 1 ms per request already in flight (up to 15 others) before it is
    # schedulable: TTFT grows, the rate falls (the waves of streams that start together spread
    # out, so TTFT grows by less than the wait)
    assert lagged.ttft_mean_s > plain.ttft_mean_s + 0.001
    assert lagged.output_tok_s < plain.output_tok_s


CACHED_LOOP = (16, 2048 + 64, 32, 1.0, 2048, 4)  # ... + cached prefix tokens, prefixes


def _closed_loop_point(phase: str, loop: tuple, result) -> dict:
    """A probe point whose one request carries the replay's mean TTFT and median TPOT."""
    concurrency, prompt, output, window_s, *cached = loop
    end_s = result.ttft_mean_s + result.tpot_p50_s * (output - 1)
    request = {
        "status": "ok",
        "sent_s": 0.0,
        "first_token_s": result.ttft_mean_s,
        "end_s": end_s,
        "token_s": [],
        "max_tokens": output,
    }
    params = {
        "concurrency": concurrency,
        "prompt_tokens": prompt,
        "output_tokens": output,
        "send_window_s": window_s,
    }
    if cached:
        params |= {"cached_prefix_tokens": cached[0], "prefixes": cached[1]}
    return {
        "phase": phase,
        "duration_s": 1.0,
        "requests": [request],
        "params": params,
        "server_deltas": {"vllm:generation_tokens_total": result.output_tok_s},
    }


def _probe_of(tmp_path, truth: CostParams) -> ProbeRun:
    """A probe whose measured TTFTs, rates and TPOTs are the replay's own under `truth`."""
    replayer = Replayer(SERVER, _profile(tmp_path, truth, "truth"))
    points = []
    for prompt, ttft_s in zip(LONE_PROMPTS, replayer.lone_ttfts_s(list(LONE_PROMPTS), 16)):
        request = {"status": "ok", "sent_s": 0.0, "first_token_s": ttft_s, "max_tokens": 16}
        points.append(
            {
                "phase": "prefill",
                "params": {"prompt_tokens": prompt},
                "requests": [request],
                "server_deltas": {},
                "duration_s": ttft_s,
            }
        )
    points.append(_closed_loop_point("throughput", LOOP, replayer.closed_loop(*LOOP)))
    cached = replayer.closed_loop(*CACHED_LOOP)
    points.append(_closed_loop_point("throughput_cached", CACHED_LOOP, cached))
    return ProbeRun(MODEL, "no-offload", False, points, "0.26.0", 4096 * 16, 16)


def test_cached_closed_loop_pays_the_engine_cores_work_per_prompt_token(tmp_path):
    """The per-prompt-token CPU work of a prefill start slows a loop of long cached prompts (a
    small model's steps that start prompts are CPU-bound): the streams that start together wait
    for it in their first token, and the loop's rate falls."""
    plain = Replayer(SERVER, _profile(tmp_path, GPU_TERMS, "plain")).closed_loop(*CACHED_LOOP)
    per_token = dataclasses.replace(GPU_TERMS, prefill_overhead_per_prompt_token_s=2e-6)
    slowed = Replayer(SERVER, _profile(tmp_path, per_token, "per-token")).closed_loop(*CACHED_LOOP)
    assert slowed.output_tok_s < 0.9 * plain.output_tok_s
    # 16 streams x 2,112 tokens x 2 us: ~68 ms of CPU work in the step that starts a wave
    assert slowed.ttft_mean_s > plain.ttft_mean_s + 0.03


def test_request_path_fit_recovers_the_terms_a_probe_was_made_with(tmp_path):
    truth = dataclasses.replace(
        GPU_TERMS,
        request_overhead_s=0.007,
        request_overhead_per_prompt_token_s=1e-6,
        prefill_request_overhead_s=1.5e-3,
        prefill_overhead_per_prompt_token_s=0.8e-6,
        frontend_lag_s_per_stream=0.3e-3,
    )
    start = dataclasses.replace(GPU_TERMS, frontend_lag_s_per_output_tok_s=2e-5)
    fit = fit_request_path([_probe_of(tmp_path, truth)], H200, start)
    assert fit is not None
    assert fit.params.frontend_lag_s_per_output_tok_s == 0.0
    assert fit.params.prefill_request_overhead_s == pytest.approx(1.5e-3)
    assert fit.params.prefill_overhead_per_prompt_token_s == pytest.approx(0.8e-6)
    # the lone line is pinned only to within an idle poll (1 ms): lines that close the lone
    # points to within it fit them all, and the lag then takes up the rest (one grid step)
    assert fit.params.request_overhead_s == pytest.approx(0.007, abs=IDLE_POLL_S)
    assert fit.params.request_overhead_per_prompt_token_s == pytest.approx(1e-6, abs=0.2e-6)
    assert 0.2e-3 <= fit.params.frontend_lag_s_per_stream <= 0.3e-3
    assert fit.errors.lone_ttft < 0.01
    assert fit.errors.throughput_ttft < 0.03 and fit.errors.throughput_tok_s < 0.01
    assert fit.errors.throughput_tpot < 0.01


def test_request_path_fit_needs_lone_points_of_a_server_without_a_connector():
    offload_only = ProbeRun(MODEL, "native-offload", True, [], "0.26.0", 65536, 16)
    assert fit_request_path([offload_only], H200, GPU_TERMS) is None
