"""Checks that a finished cell's files are whole: what a truncated, binary or hand-edited file
breaks. A cell with a problem is not used for any finding (the report names it and the problem).

Contract: each function returns a list of one-line problems (empty: the files are sound). They
never raise on bad data; they read only what they are given.
- `request_row_problems(frame, cell_id, requests_ok)`: requests.parquet's rows of an ok cell: the
  contract's columns present, at least one row, every row of this cell, statuses and phases known,
  times finite and not negative, token counts not negative, and as many ok measure-phase rows as
  cell.json's summary says (`requests_ok`; None: not checked).
"""

from __future__ import annotations

import math

import pandas as pd

from kvbench.results.records import REQUEST_SCHEMA, Phase, RequestStatus

_STATUSES = {s.value for s in RequestStatus}
_PHASES = {p.value for p in Phase}
_TIMES = ("scheduled_s", "sent_s")
_COUNTS = ("prompt_tokens", "output_tokens")


def request_row_problems(frame: pd.DataFrame, cell_id: str, requests_ok: int | None) -> list[str]:
    missing = [name for name in REQUEST_SCHEMA.names if name not in frame.columns]
    if missing:
        return [f"requests.parquet: missing columns {', '.join(missing[:5])}"]
    if frame.empty:
        return ["requests.parquet: no rows, but the cell is marked ok"]
    problems = []
    foreign = frame["cell_id"] != cell_id
    if foreign.any():
        problems.append(f"requests.parquet: {int(foreign.sum())} rows of another cell")
    unknown = ~frame["status"].isin(_STATUSES)
    if unknown.any():
        problems.append(f"requests.parquet: {int(unknown.sum())} rows with an unknown status")
    unknown = ~frame["phase"].isin(_PHASES)
    if unknown.any():
        problems.append(f"requests.parquet: {int(unknown.sum())} rows with an unknown phase")
    for column in _TIMES:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ~values.map(lambda v: math.isfinite(v) and v >= 0)
        if bad.any():
            problems.append(f"requests.parquet: {column}: {int(bad.sum())} rows not a time >= 0")
    for column in _COUNTS:
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.isna() | (values < 0)).any():
            problems.append(f"requests.parquet: {column}: negative or missing token counts")
    if requests_ok is not None:
        counted = int(((frame["status"] == "ok") & (frame["phase"] == "measure")).sum())
        if counted != requests_ok:
            problems.append(
                f"requests.parquet holds {counted} successful measure-phase requests, "
                f"cell.json's summary says {requests_ok} (a file is truncated or was changed)"
            )
    return problems
