"""Cold-start check: first-turn cache hits explained by earlier requests of the same cell are not contamination."""

from __future__ import annotations

import pandas as pd

from analysis.synth import cache_protocol_of
from kvbench.analysis.load import CellData
from kvbench.analysis.validity import (
    CheckStatus,
    Thresholds,
    check_warm_cache,
    unexplained_first_turn_hits,
)
from kvbench.results.layout import CellInfo, CellStatus
from kvbench.results.records import REQUEST_SCHEMA, RequestRecord

PREFIX = 1024


def _req(conv, turn, group, sent_s, first_token_s, cached, reused, prompt=1088):
    return RequestRecord(
        request_id=f"{conv}-{turn}",
        conversation_id=conv,
        turn_index=turn,
        cell_id="x",
        sent_s=sent_s,
        first_token_s=first_token_s,
        end_s=first_token_s + 1,
        prompt_tokens=prompt,
        cached_tokens=cached,
        prefix_group=group,
        reused_prefix_tokens=reused,
    ).to_row()


def _cell(rows) -> CellData:
    frame = pd.DataFrame(rows, columns=REQUEST_SCHEMA.names)
    info = CellInfo(
        cell_id="x",
        model="m",
        scenario="llm-d-redis",
        base_scenario="llm-d-redis",
        level=8,
        repeat=0,
        status=CellStatus.OK,
        cache_protocol=cache_protocol_of({"reset": True}),
    )
    return CellData(info=info, requests=frame, server=pd.DataFrame(), system=pd.DataFrame())


def test_concurrent_first_turns_served_out_of_send_order_are_not_contamination():
    # The quickstart case: a (group 9) is sent first, so the workload records reused 0, but it waits in
    # the queue; b of the same group, sent 0.5 ms later, is prefilled first and computes the prefix.
    rows = [
        _req("a", 0, 9, 63.6028, 65.397, PREFIX, 0),
        _req("b", 0, 9, 63.6033, 63.764, 0, PREFIX),
    ]
    table = unexplained_first_turn_hits(_cell(rows).requests)
    assert table.set_index("conversation_id")["explained_tokens"].to_dict() == {
        "a": PREFIX,
        "b": PREFIX,
    }
    check = check_warm_cache(_cell(rows), Thresholds())
    assert check.status == CheckStatus.OK
    assert check.evidence.startswith("0/2 first-turn requests")


def test_recycled_conversation_may_hit_its_whole_earlier_turn0_prompt():
    rows = [
        _req("c3", 0, 1, 1.0, 1.1, 0, 0),
        _req("c3", 1, 1, 2.0, 2.1, 1000, 1100, prompt=1184),
        _req("c3~c1", 0, 1, 5.0, 5.1, 1072, PREFIX),
    ]
    table = unexplained_first_turn_hits(_cell(rows).requests).set_index("conversation_id")
    assert table.loc["c3~c1", "explained_tokens"] == 1088
    assert check_warm_cache(_cell(rows), Thresholds()).status == CheckStatus.OK


def test_hits_nothing_earlier_in_the_cell_explains_are_flagged():
    # Group 4 is first used by d, nobody in the cell sent group 4 before d was served, yet d hit
    # 1024 tokens: those blocks came from before the cell (no reset, or a reset that did not work).
    # e's group-5 request sent *after* d was served cannot explain d either.
    rows = [
        _req("d", 0, 4, 1.0, 1.2, PREFIX, 0),
        _req("e", 0, 4, 1.3, 1.4, PREFIX, PREFIX),
        _req("f", 0, 5, 0.5, 0.6, 0, 0),
    ]
    check = check_warm_cache(_cell(rows), Thresholds())
    assert check.status == CheckStatus.FLAG
    assert "1/3 first-turn requests" in check.evidence
    assert "max excess 1024 tokens, e.g. conversation d: 1024 cached, 0 explained" in check.evidence


def test_a_group_member_sent_before_but_the_hit_exceeds_the_prefix_is_flagged():
    rows = [_req("g", 0, 2, 1.0, 1.1, 0, 0), _req("h", 0, 2, 2.0, 2.1, 1072, PREFIX)]
    table = unexplained_first_turn_hits(_cell(rows).requests).set_index("conversation_id")
    assert table.loc["h", "excess_tokens"] == 48
    assert check_warm_cache(_cell(rows), Thresholds()).status == CheckStatus.FLAG


def test_a_primed_prefix_explains_the_first_real_request_of_its_group():
    # cache.prime: the protocol sent group 8's prefix (prompt = the prefix) before the load; the
    # first real request of the group then hits it. Without the prime record it would be flagged.
    prime = RequestRecord(
        request_id="prime-8",
        conversation_id="prime-8",
        turn_index=0,
        cell_id="x",
        phase="prime",
        sent_s=0.1,
        first_token_s=0.3,
        end_s=0.3,
        prompt_tokens=PREFIX,
        cached_tokens=0,
        prefix_group=8,
        reused_prefix_tokens=0,
    ).to_row()
    first_use = _req("c8", 0, 8, 1.0, 1.2, PREFIX, 0)
    assert check_warm_cache(_cell([prime, first_use]), Thresholds()).status == CheckStatus.OK
    assert check_warm_cache(_cell([first_use]), Thresholds()).status == CheckStatus.FLAG
