"""Row checks of a finished cell's requests.parquet."""

import pandas as pd

from kvbench.results.integrity import request_row_problems
from kvbench.results.records import RequestRecord


def frame(n_ok: int = 3, **changes) -> pd.DataFrame:
    rows = [
        RequestRecord(request_id=str(i), conversation_id="c", turn_index=0, cell_id="c1").to_row()
        for i in range(n_ok)
    ]
    data = pd.DataFrame(rows)
    for column, value in changes.items():
        data.loc[0, column] = value
    return data


def test_sound_rows_have_no_problem():
    assert request_row_problems(frame(), "c1", 3) == []


def test_each_kind_of_damage_is_named():
    assert "another cell" in request_row_problems(frame(cell_id="x"), "c1", None)[0]
    assert "unknown status" in request_row_problems(frame(status="weird"), "c1", None)[0]
    assert "sent_s" in request_row_problems(frame(sent_s=-1.0), "c1", None)[0]
    assert "sent_s" in request_row_problems(frame(sent_s=float("nan")), "c1", None)[0]
    assert "token counts" in request_row_problems(frame(output_tokens=-2), "c1", None)[0]
    empty = frame(1).iloc[0:0]
    assert "no rows" in request_row_problems(empty, "c1", None)[0]
    assert "missing columns" in request_row_problems(frame().drop(columns=["ttft_ms"]), "c1", 3)[0]


def test_a_truncated_file_disagrees_with_the_summary():
    problems = request_row_problems(frame(2), "c1", 3)
    assert problems == [
        "requests.parquet holds 2 successful measure-phase requests, cell.json's summary says 3 "
        "(a file is truncated or was changed)"
    ]
