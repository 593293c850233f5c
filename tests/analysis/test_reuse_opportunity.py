"""The reuse-opportunity check: a workload whose measured requests never resend earlier tokens gives
every cache configuration the same (zero) hits, whatever the tiers (the seed evaluation's trap)."""

from __future__ import annotations

import pandas as pd

from kvbench.analysis.load import CellData
from kvbench.analysis.validity import CheckStatus, Thresholds, check_reuse_opportunity
from kvbench.results.layout import CellInfo, CellStatus
from kvbench.results.records import REQUEST_SCHEMA, RequestRecord


def _cell(turns_and_reuse: list[tuple[int, int]], workload: dict | None = None) -> CellData:
    rows = [
        RequestRecord(
            request_id=f"r{i}",
            conversation_id=f"c{i}",
            turn_index=turn,
            cell_id="x",
            prompt_tokens=10128,
            cached_tokens=0,
            reused_prefix_tokens=reused,
        ).to_row()
        for i, (turn, reused) in enumerate(turns_and_reuse)
    ]
    info = CellInfo(
        cell_id="x",
        model="m",
        scenario="lmcache-local",
        base_scenario="lmcache-local",
        level=50,
        repeat=0,
        status=CellStatus.OK,
        **({"workload": workload} if workload else {}),
    )
    return CellData(
        info=info,
        requests=pd.DataFrame(rows, columns=REQUEST_SCHEMA.names),
        server=pd.DataFrame(),
        system=pd.DataFrame(),
    )


def test_first_turns_on_unseen_prefixes_only_are_flagged_with_the_working_set():
    capacity = {
        "kind": "multi_turn_shared_prefix",
        "conversations": 50,
        "seed": 0,
        "capacity": {"working_set_tokens": 9_024_000, "gpu_kv_capacity_tokens": 311_120},
    }
    check = check_reuse_opportunity(_cell([(0, 0)] * 50, capacity), Thresholds())
    assert check.status == CheckStatus.FLAG
    assert "0% of 50 measured requests" in check.evidence
    assert "9,024,000 tokens = 29.0x the GPU KV capacity (311,120)" in check.evidence


def test_later_turns_and_reused_prefixes_count_as_reuse():
    requests = [(0, 0)] * 6 + [(1, 0)] * 2 + [(0, 10000)] * 2  # 4 of 10 resend earlier tokens
    check = check_reuse_opportunity(_cell(requests), Thresholds())
    assert check.status == CheckStatus.OK
    assert check.evidence.startswith("40% of 10 measured requests")
