"""/metrics of the emulated engine against real vLLM 0.32's page (tests/fixtures/
vllm-0.32-cpu-metrics.txt, CPU build): the same `vllm:` series (names, types, label names), and
values that follow the emulator's state."""

from __future__ import annotations

import re

from emu_api_helpers import running_engine
from emu_api_vllm_capture import FIXTURES, TOKENIZER_DIR, vllm032_args
from prometheus_client.parser import text_string_to_metric_families

_SAMPLE = re.compile(r"(?P<name>[^{ ]+)(?:\{(?P<labels>.*)\})? ")


def vllm_series(page: str) -> tuple[set[tuple[str, str]], set[tuple[str, frozenset[str]]]]:
    """({(family, type)}, {(sample name, label names)}) of the page's vllm: series."""
    types, samples = set(), set()
    for line in page.splitlines():
        if line.startswith("# TYPE vllm:"):
            _, _, name, kind = line.split()
            types.add((name, kind))
        elif line.startswith("vllm:"):
            match = _SAMPLE.match(line)
            assert match, line
            labels = frozenset(re.findall(r'(\w+)="', match["labels"] or ""))
            samples.add((match["name"], labels))
    return types, samples


def values(page: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "model_name"))
            out[(sample.name, labels)] = sample.value
    return out


async def _page(session) -> str:
    async with session.get("/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_every_real_vllm_series_is_there_with_its_type_and_labels():
    real_types, real_samples = vllm_series((FIXTURES / "vllm-0.32-cpu-metrics.txt").read_text())
    # the capture is a full page: 72 families, 104 sample names (`_created` series included)
    assert len(real_types) == 72 and len({name for name, _ in real_samples}) == 104
    async with running_engine(vllm032_args(), tokenizer_dir=str(TOKENIZER_DIR)) as (_, session):
        async with session.post("/v1/completions", json={"prompt": "a b c", "max_tokens": 3}):
            pass
        types, samples = vllm_series(await _page(session))
    assert real_types - types == set(), "series real vLLM has and the emulator lacks"
    assert types - real_types == set(), "vllm: series real vLLM does not have"
    assert samples == real_samples


async def test_new_series_follow_the_emulator_state():
    async with running_engine(vllm032_args(), tokenizer_dir=str(TOKENIZER_DIR)) as (_, session):
        before = values(await _page(session))
        body = {"prompt": [5, 6, 7, 8], "max_tokens": 3, "n": 2}
        async with session.post("/v1/completions", json=body) as resp:
            assert resp.status == 200
        after = values(await _page(session))
    engine = (("engine", "0"),)
    assert after[("vllm:request_params_n_count", engine)] == 1
    assert after[("vllm:request_params_n_sum", engine)] == 2
    assert after[("vllm:request_max_num_generation_tokens_sum", engine)] == 3
    assert after[("vllm:request_num_preemptions_count", engine)] == 2  # one per engine request
    assert after[("vllm:request_success_total", (*engine, ("finished_reason", "length")))] == 2
    flops = ("vllm:estimated_flops_per_gpu_total", engine)
    assert before[flops] == 0 < after[flops]
    assert after[("vllm:engine_sleep_state", (*engine, ("sleep_state", "awake")))] == 1
    assert after[("vllm:num_requests_waiting_by_reason", (*engine, ("reason", "capacity")))] == 0
