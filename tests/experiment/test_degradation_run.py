"""Degradation is measured and reported: faults injected into a running emulated stack are counted
per cell from the servers' own counters, recorded in cell.json and become FLAG validity checks."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pandas as pd
import psutil

from kvbench.experiment.cell_run import RunnerHooks
from kvbench.experiment.runner import run_experiment_cli

SPEC = """
name: degradation
models: [Qwen/Qwen3-0.6B]
scenarios: [{scenario}]
target: {{kind: emulated, hardware: H100-SXM, engines: {engines}, num_gpu_blocks_override: 4096,
         max_model_len: 2048, max_num_seqs: 16}}
workload: {{kind: multi_turn_shared_prefix, prefix_tokens: 512, prefix_count: 4, turns: 2,
           prompt_tokens: 32, output_tokens: 16, conversations: 40, reuse_order: round_robin}}
load: {{strategy: concurrent, levels: [4], duration_s: 4}}
collect: {{interval_s: 0.5, system_metrics: false}}
"""


def _children_named(fragment: str) -> list[psutil.Process]:
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if fragment in " ".join(process.cmdline() or [process.name()]):
                found.append(process)
        except psutil.Error:  # gone, or a zombie of one killed earlier
            continue
    return found


def _kill_once_after(n_records: int, fragment: str):
    seen = {"n": 0, "killed": []}

    def on_record(record) -> None:
        seen["n"] += 1
        if seen["n"] == n_records:
            for process in _children_named(fragment):
                os.kill(process.pid, signal.SIGKILL)
                seen["killed"].append(process.pid)

    return on_record, seen


def _cell(run: Path) -> tuple[dict, pd.DataFrame]:
    [cell_dir] = list((run / "cells").iterdir())
    return (
        json.loads((cell_dir / "cell.json").read_text()),
        pd.read_parquet(cell_dir / "requests.parquet"),
    )


def _checks(run: Path) -> pd.DataFrame:
    from kvbench.report.build import build_report

    build_report(run, ["md", "csv"])
    return pd.read_csv(run / "report" / "validity_checks.csv")


def test_a_store_killed_mid_cell_is_counted_flagged_and_every_request_accounted(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(scenario="lmcache-redis", engines=1))
    on_record, seen = _kill_once_after(20, "redis-server")
    run = tmp_path / "run"
    run_experiment_cli(spec, run, hooks=RunnerHooks(on_record=on_record))
    assert seen["killed"], "no store to kill"
    cell, rows = _cell(run)
    degradation = cell["validity"]["degradation"]
    assert degradation["store_errors"] + degradation["store_skipped"] > 0
    assert cell["status"] == "ok"  # the load ran: its findings are qualified, not dropped
    checks = _checks(run)
    store = checks[checks["check"] == "KV store available"]
    assert store["status"].tolist() == ["FLAG"] and "store" in store["evidence"].iloc[0]
    # every request sent is in the file, with a status (the store fault does not lose any)
    assert rows["request_id"].is_unique and rows["status"].notna().all()
    assert seen["n"] == len(rows)


def test_a_failed_reset_is_counted_and_flagged(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kv_endpoint import KvEndpoint

    spec = tmp_path / "spec.yaml"
    with KvEndpoint(reset_supported=False) as server:
        spec.write_text(
            textwrap.dedent(f"""
            name: noreset
            models: [tiny]
            target: {{kind: endpoint, url: "{server.url}", metrics_urls: ["{server.url}/metrics"]}}
            workload: {{kind: synthetic, prompt_tokens: 8, output_tokens: 4, requests: 8}}
            load: {{strategy: concurrent, levels: [1], requests_per_level: 8}}
            collect: {{interval_s: 0.2, system_metrics: false}}
            """)
        )
        run_experiment_cli(spec, tmp_path / "run")
    cell, _ = _cell(tmp_path / "run")
    assert cell["validity"]["degradation"]["failed_resets"] == 1
    checks = _checks(tmp_path / "run")
    reset = checks[checks["check"] == "cache reset before the cell"]
    assert reset["status"].tolist() == ["FLAG"]


def test_an_engine_and_the_index_store_killed_mid_cell_are_counted(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(scenario="llm-d-redis", engines=2))
    state = {"n": 0, "killed": []}

    def on_record(record) -> None:
        state["n"] += 1
        if state["n"] == 20:  # one of the two engines dies
            engine = _children_named("emulate serve")[-1]
            os.kill(engine.pid, signal.SIGKILL)
            state["killed"].append("engine")
        if state["n"] == 30:  # then the router's KV-block index store
            for store in _children_named("redis-server"):
                os.kill(store.pid, signal.SIGKILL)
                state["killed"].append("store")

    run = tmp_path / "run"
    run_experiment_cli(spec, run, hooks=RunnerHooks(on_record=on_record))
    assert state["killed"] == ["engine", "store"]
    cell, rows = _cell(run)
    degradation = cell["validity"]["degradation"]
    assert degradation["engine_ejections"] >= 1
    assert degradation["index_lookup_failures"] > 0
    flagged = _checks(run).query("status == 'FLAG'")["check"].tolist()
    assert "engines stayed in routing" in flagged and "router index available" in flagged
    # every request is accounted: each one recorded once, ok or with its failure
    assert rows["request_id"].is_unique and len(rows) == state["n"]
    assert set(rows["status"]) <= {"ok", "error", "timeout", "cancelled"}


def _listening_port(process: psutil.Process) -> int:
    [port] = {c.laddr.port for c in process.net_connections("tcp") if c.status == "LISTEN"}
    return port


def test_writes_the_store_refuses_mid_cell_are_counted_from_its_own_counters(tmp_path):
    """The store runs out of memory under noeviction: LMCache's puts are refused ("-OOM"). The count
    comes from the store's INFO, so it is seen whichever engine wrote (a real vLLM too)."""
    import redis

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(scenario="lmcache-redis", engines=1))
    state = {"n": 0, "squeezed": False}

    def on_record(record) -> None:
        state["n"] += 1
        if state["n"] == 10:
            [store] = _children_named("redis-server")
            client = redis.Redis(host="127.0.0.1", port=_listening_port(store))
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)  # every write from now on is over the limit
            client.close()
            state["squeezed"] = True

    run = tmp_path / "run"
    run_experiment_cli(spec, run, hooks=RunnerHooks(on_record=on_record))
    assert state["squeezed"]
    cell, rows = _cell(run)
    degradation = cell["validity"]["degradation"]
    assert degradation["store_writes_refused"] > 0
    assert degradation["store_connections_rejected"] == 0
    checks = _checks(run)
    store = checks[checks["check"] == "KV store available"]
    assert store["status"].tolist() == ["FLAG"]
    assert "store writes refused" in store["evidence"].iloc[0]
    assert rows["request_id"].is_unique and len(rows) == state["n"]
