"""Reading run directories: schema versions, migration of version 1, unknown keys and versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kvbench.analysis.load import load_run
from kvbench.analysis.metrics import cell_metrics
from kvbench.cli import main
from kvbench.errors import UserError
from kvbench.results.layout import CELL_FILE, MANIFEST_FILE, REQUESTS_FILE
from kvbench.results.read import read_cell_info, read_manifest
from kvbench.results.records import REQUEST_SCHEMA, RequestRecord
from kvbench.results.store import RunStore

V1_RUN = Path(__file__).parent.parent / "fixtures" / "run-v1"
NO_OFFLOAD = "Qwen3-8B__no-offload__6__r0"
LLM_D = "Qwen3-8B__llm-d-redis__6__r0"


def v1_run(tmp_path: Path) -> Path:
    run = tmp_path / "v1"
    shutil.copytree(V1_RUN, run)
    for cell_id in (NO_OFFLOAD, LLM_D):
        info = json.loads((run / "cells" / cell_id / CELL_FILE).read_text())
        start = info["measure_start_s"]
        rows = [
            RequestRecord(
                f"r{i}",
                f"c{i}",
                0,
                cell_id,
                sent_s=start + i,
                end_s=start + i + 0.5,
                ttft_ms=10.0 * (i + 1),
                e2e_ms=500.0,
                output_tokens=5,
                prompt_tokens=100,
            ).to_row()
            for i in range(4)
        ]
        table = pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
        pq.write_table(table, run / "cells" / cell_id / REQUESTS_FILE)
    return run


def test_a_version_1_run_is_migrated_on_read(tmp_path):
    run = load_run(v1_run(tmp_path))
    assert run.manifest.schema_version == 2
    cells = {cell.cell_id: cell for cell in run.cells}
    assert set(cells) == {NO_OFFLOAD, LLM_D}
    llm_d = cells[LLM_D].info
    assert llm_d.base_scenario == "llm-d-redis" and llm_d.swept_params == {}
    assert llm_d.deployment is not None
    facts = llm_d.deployment.facts
    assert facts.gpu_kv_capacity_tokens is not None and facts.gpu_kv_capacity_tokens > 0
    assert facts.store is not None and facts.store.role == "kv-block-index"
    assert llm_d.cache_protocol is not None and llm_d.cache_protocol.reset is not None
    assert llm_d.cache_protocol.reset.components["redis"].keys_removed == 0
    assert llm_d.summary is None  # version 1's summary keys are not carried; records are
    # a version-1 manifest records no kinds: the built-in catalog's declaration is used
    assert run.routes_precisely("llm-d-redis") and not run.offloads("no-offload")
    row = cell_metrics(cells[NO_OFFLOAD])
    assert row["requests_ok"] == 4 and row["ttft_p50_ms"] == pytest.approx(25.0)


def test_a_version_1_run_reports_but_cannot_be_resumed(tmp_path):
    run = v1_run(tmp_path)
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "REPORT.md").is_file()
    with pytest.raises(UserError, match="schema_version 1.*cannot be resumed"):
        RunStore.open(run)


def test_an_unknown_schema_version_is_one_line_and_exit_2(tmp_path, capsys):
    run = v1_run(tmp_path)
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    manifest["schema_version"] = 99
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "manifest.json: schema_version 99 is not one this kvbench reads (1, 2)" in err


def test_an_undeclared_key_in_a_version_2_file_is_rejected_naming_it(tmp_path):
    run = load_run(v1_run(tmp_path))
    info = next(c.info for c in run.cells if c.cell_id == NO_OFFLOAD)
    path = tmp_path / CELL_FILE
    path.write_text(json.dumps({**info.model_dump(mode="json"), "scenario_name": "no-offload"}))
    with pytest.raises(
        UserError, match=r"cell.json: scenario_name: Extra inputs are not permitted"
    ):
        read_cell_info(path)
    manifest = run.manifest.model_dump(mode="json")
    manifest["cells"][0]["gpu"] = 1
    path = tmp_path / MANIFEST_FILE
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"manifest.json: cells.0.gpu: Extra inputs"):
        read_manifest(path)
