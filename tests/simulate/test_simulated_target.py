"""`kvbench run --target simulated` end to end: the run directory a live run writes, in virtual time,
deterministic, with real Redis / Valkey stores."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kvbench.cli import main

SPEC = {
    "name": "sim-small",
    "seed": 5,
    "models": ["Qwen/Qwen3-8B"],
    "scenarios": ["no-offload", "native-offload", "lmcache-redis", "lmcache-valkey", "llm-d-redis"],
    "target": {
        "kind": "emulated",
        "hardware": "L40S",
        "engines": 2,
        "num_gpu_blocks_override": 256,
        "max_model_len": 4096,
        "max_num_seqs": 16,
    },
    "workload": {
        "kind": "multi_turn_shared_prefix",
        "prefix_tokens": 1024,
        "prefix_count": 8,
        "turns": 2,
        "prompt_tokens": 32,
        "output_tokens": 16,
        "conversations": 40,
        "reuse_order": "round_robin",
    },
    "load": {"strategy": "concurrent", "levels": [4], "duration_s": 6, "warmup_s": 1},
    "cache": {"reset": True, "prime": True, "verify": True},
    "collect": {"interval_s": 1},
}


def write_spec(tmp_path: Path, **changes) -> Path:
    spec = {**SPEC, **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cells_of(run: Path) -> dict[str, dict]:
    manifest = json.loads((run / "manifest.json").read_text())
    return {
        c["scenario"]: json.loads((run / "cells" / c["cell_id"] / "cell.json").read_text())
        for c in manifest["cells"]
    }


def parquet_bytes(run: Path, cell_id: str, name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((run / "cells" / cell_id / name).glob("*.parquet"))]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run a: the emulated spec switched with --target (cells in worker processes); run b: the
    same spec written as kind simulated with one worker (every cell in process)."""
    tmp = tmp_path_factory.mktemp("sim")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    switched = write_spec(tmp / "a")
    assert (
        main(["run", str(switched), "--target", "simulated", "--out", str(tmp / "a" / "run")]) == 0
    )
    direct = write_spec(tmp / "b", target={**SPEC["target"], "kind": "simulated", "workers": 1})
    assert main(["run", str(direct), "--out", str(tmp / "b" / "run")]) == 0
    return [tmp / "a" / "run", tmp / "b" / "run"]


def test_same_spec_and_seed_give_identical_requests_byte_for_byte(two_runs):
    a, b = two_runs
    for cell in cells_of(a).values():
        assert parquet_bytes(a, cell["cell_id"], "requests.parquet") == parquet_bytes(
            b, cell["cell_id"], "requests.parquet"
        )


def test_manifest_and_report_say_simulated(two_runs):
    run = two_runs[0]
    sut = json.loads((run / "manifest.json").read_text())["system_under_test"]
    assert sut["kind"] == "simulated" and sut["emulated"] is True
    assert sut["details"]["hardware"] == "L40S" and "roofline" in sut["details"]["cost_model"]
    assert main(["report", str(run), "--format", "md"]) == 0
    head = (run / "report" / "REPORT.md").read_text().splitlines()[:4]
    assert any("SIMULATED" in line for line in head)


def test_records_carry_tiers_routing_and_simulated_times(two_runs):
    run = two_runs[0]
    cells = cells_of(run)
    for scenario, cell in cells.items():
        rows = pd.read_parquet(run / "cells" / cell["cell_id"] / "requests.parquet")
        measured = rows[rows.phase == "measure"]
        assert (measured.status == "ok").all() and len(measured) > 10, scenario
        assert set(rows.phase) == {"prime", "warmup", "measure"}
        assert measured.endpoint.isin(["sim-engine-0:8000", "sim-engine-1:8000"]).all()
        assert measured.router_predicted_hit_tokens.notna().all()
        assert (measured.ttft_ms > 0).all() and (measured.sent_s <= measured.first_token_s).all()
        # the cell's virtual window: warm-up 1 s of a 6 s level that starts after the prime
        assert cell["measure_end_s"] - cell["measure_start_s"] == pytest.approx(5.0)
    remote = pd.read_parquet(run / "cells" / cells["lmcache-redis"]["cell_id"] / "requests.parquet")
    assert remote.remote_hit_tokens.sum() > 0  # the real Redis served LMCache's remote tier
    native = pd.read_parquet(
        run / "cells" / cells["native-offload"]["cell_id"] / "requests.parquet"
    )
    assert native.cpu_hit_tokens.sum() > 0
    precise = pd.read_parquet(run / "cells" / cells["llm-d-redis"]["cell_id"] / "requests.parquet")
    assert precise.router_predicted_hit_tokens.sum() > 0  # KV events reached the Redis index


def test_server_metrics_have_vllm_names_labels_and_the_collect_interval(two_runs):
    run = two_runs[0]
    cell = cells_of(run)["native-offload"]
    rows = pd.read_parquet(run / "cells" / cell["cell_id"] / "server_metrics.parquet")
    assert set(rows.source) == {"engine-0", "engine-1", "router"}
    hits = rows[(rows.metric == "vllm:prefix_cache_hits_total") & (rows.source == "engine-0")]
    assert json.loads(hits.labels.iloc[0]) == {"engine": "0", "model_name": "Qwen/Qwen3-8B"}
    steps = sorted(set(hits.ts_s))
    assert [round(b - a, 9) for a, b in zip(steps, steps[1:-1])] == [1.0] * (len(steps) - 2)
    assert hits.value.iloc[-1] > 0
    assert "vllm:kv_offload_total_bytes_total" in set(rows.metric) or any(
        m.startswith("vllm:kv_offload") for m in set(rows.metric)
    )
    assert "inference_objective_request_total" in set(rows[rows.source == "router"].metric)
    verify = cell["cache_protocol"]["verify"]
    assert verify["server_counters"]["gpu_hits_tokens"] > 0


def test_lmcache_valkey_holds_what_redis_holds_and_moves_it_over_more_streams(two_runs):
    # the same chunks reach either store (same hits), but LMCache's valkey:// connector spreads a
    # batch over its worker pool, so its remote transfers hold the steps for less time (more
    # tokens a second; TTFT may rise with them in a closed loop)
    cells = cells_of(two_runs[0])
    redis, valkey = cells["lmcache-redis"]["summary"], cells["lmcache-valkey"]["summary"]
    assert redis["cached_prompt_fraction"] == pytest.approx(
        valkey["cached_prompt_fraction"], abs=0.02
    )
    assert valkey["output_tokens_per_s"] > redis["output_tokens_per_s"]


def test_a_chat_spec_without_text_prompts_fails_with_the_reason(tmp_path, capsys):
    spec = write_spec(
        tmp_path,
        scenarios=["no-offload"],
        load={**SPEC["load"], "api": "chat"},
        workload={
            "kind": "synthetic",
            "prompt_tokens": 32,
            "output_tokens": 8,
            "requests": 10,
        },
    )
    out = tmp_path / "chat"
    code = main(["run", str(spec), "--target", "simulated", "--out", str(out)])
    assert code in (1, 2)
    printed = capsys.readouterr()
    assert "chat" in printed.out + printed.err


def test_target_switch_only_between_kinds_whose_fields_carry_over(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["run", str(spec), "--target", "vllm", "--out", str(tmp_path / "x")]) == 2
    assert "--target" in capsys.readouterr().err


def test_degradation_counters_are_measured_as_live(two_runs):
    """The live emulated stack's pattern: router counters always, LMCache's store counter where
    LMCache runs (store_skipped only exists while a breaker opened), the store's refusals where a
    store runs, every reset done."""
    for scenario, cell in cells_of(two_runs[0]).items():
        counts = cell["validity"]["degradation"]
        lmcache = scenario.startswith("lmcache")
        assert counts["store_errors"] == (0 if lmcache else None), scenario
        for kind in ("index_lookup_failures", "kv_events_lost", "kv_events_apply_failures"):
            assert counts[kind] == 0, (scenario, kind)
        assert counts["engine_ejections"] == 0 and counts["failed_resets"] == 0, scenario
        # the real store's own INFO counters, read where the scenario runs one
        with_store = cell["deployment"]["facts"]["store"] is not None
        assert with_store == (scenario in ("lmcache-redis", "lmcache-valkey", "llm-d-redis"))
        for kind in ("store_writes_refused", "store_connections_rejected"):
            assert counts[kind] == (0 if with_store else None), (scenario, kind)
        assert counts["unscraped_sources"] == []


def test_router_decisions_are_logged_as_the_live_router_logs_them(two_runs):
    a, b = two_runs
    cell = cells_of(a)["llm-d-redis"]
    facts = cell["deployment"]["facts"]
    log = Path(facts["decision_log_path"])
    assert log.parent == Path(facts["logs_path"]) and (log.parent / "epp-config.yaml").is_file()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    rows = pd.read_parquet(a / "cells" / cell["cell_id"] / "requests.parquet")
    # one decision per routed request (prime included), in virtual time order, at its arrival
    assert len(lines) == len(rows) and {d["request_id"] for d in lines} == set(rows.request_id)
    assert [d["ts_s"] for d in lines] == sorted(d["ts_s"] for d in lines)
    by_id = {d["request_id"]: d for d in lines}
    for row in rows.itertuples():
        decision = by_id[row.request_id]
        assert row.sent_s < decision["ts_s"] < row.first_token_s
        assert decision["endpoint"] == row.endpoint
        assert decision["predicted_hit_tokens"] == row.router_predicted_hit_tokens
    assert set(lines[0]) >= {"ts_s", "candidates", "scores", "weights", "totals", "retries"}
    assert any(d["predicted_hit_tokens"] > 0 for d in lines)
    # parallel workers and one process write the same log
    other = Path(cells_of(b)["llm-d-redis"]["deployment"]["facts"]["decision_log_path"])
    assert other.read_bytes() == log.read_bytes()
    assert not (a / "logs" / ".router-decision-parts").exists()
