import json

import pandas as pd
import pytest

from kvbench.errors import UserError
from kvbench.results.layout import CellInfo, CellRef, CellStatus, RunManifest, SystemUnderTest
from kvbench.results.records import RequestRecord
from kvbench.results.store import RunStore


def manifest():
    return RunManifest(
        kvbench_version="0",
        run_name="t",
        created_at="now",
        spec={},
        system_under_test=SystemUnderTest(kind="endpoint", emulated=False, description="x"),
    )


def info(cell_id="m__s__1__r0"):
    return CellInfo(cell_id=cell_id, model="m", scenario="s", base_scenario="s", level=1, repeat=0)


def record(i):
    return RequestRecord(
        request_id=f"q{i}", conversation_id="c", turn_index=i, cell_id="m__s__1__r0"
    )


def test_requests_are_appended_in_batches_of_part_files(tmp_path):
    store = RunStore.create(tmp_path / "run", manifest())
    store.register_cells(
        [
            CellRef(
                cell_id="m__s__1__r0", model="m", scenario="s", base_scenario="s", level=1, repeat=0
            )
        ]
    )
    writer = store.start_cell(info(), batch_rows=2)
    for i in range(5):
        writer.add_request(record(i))
    parts = sorted(p.name for p in (writer.directory / "requests.parquet").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet"]  # the 5th row is still buffered
    store.end_cell(writer, CellStatus.OK)
    frame = pd.read_parquet(writer.directory / "requests.parquet")
    assert sorted(frame["turn_index"]) == [0, 1, 2, 3, 4]
    cell = json.loads((writer.directory / "cell.json").read_text())
    assert cell["status"] == "ok" and cell["ended_at"]
    assert (
        json.loads((tmp_path / "run" / "manifest.json").read_text())["cells"][0]["status"] == "ok"
    )


def test_resume_redoes_unfinished_cells_from_scratch_and_never_reruns_ok(tmp_path):
    store = RunStore.create(tmp_path / "run", manifest())
    store.register_cells(
        [
            CellRef(cell_id=c, model="m", scenario="s", base_scenario="s", level=1, repeat=0)
            for c in ("a", "b")
        ]
    )
    done = store.start_cell(info("a"))
    done.add_request(record(0))
    store.end_cell(done, CellStatus.OK)
    partial = store.start_cell(info("b"), batch_rows=1)
    partial.add_request(record(1))  # flushed; then the process "dies" with b running

    reopened = RunStore.open(tmp_path / "run")
    assert reopened.is_done("a") and not reopened.is_done("b")
    assert reopened.cell_ref("b").status == CellStatus.RUNNING
    with pytest.raises(RuntimeError):
        reopened.start_cell(info("a"))
    redo = reopened.start_cell(info("b"))
    assert not (redo.directory / "requests.parquet").exists()  # the partial rows are gone
    redo.add_request(record(2))
    reopened.end_cell(redo, CellStatus.OK)
    assert list(pd.read_parquet(redo.directory / "requests.parquet")["turn_index"]) == [2]


def test_create_refuses_an_existing_run_and_open_needs_one(tmp_path):
    RunStore.create(tmp_path / "run", manifest())
    with pytest.raises(UserError, match="--out.*--resume"):
        RunStore.create(tmp_path / "run", manifest())
    with pytest.raises(UserError, match="--resume"):
        RunStore.open(tmp_path / "empty")
