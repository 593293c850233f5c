"""Every failure kind becomes a record with its cause; the level itself never raises."""

import asyncio
import socket

import pytest
from tests.loadgen.conftest import conversation, run, single_pass

from kvbench.loadgen.api import EndpointConfig, LevelPlan, RunClock, run_level

FAULT_MESSAGES = {
    "http500": "HTTP 500: injected failure on request 3",
    "drop": "connection dropped mid-stream after 4 tokens",
    "malformed": "malformed SSE event (not JSON)",
    "truncate": "truncated SSE stream: ended before data: [DONE] after 4 tokens",
    "error_event": "server error in stream: injected engine error",
}


@pytest.mark.parametrize("fault", sorted(FAULT_MESSAGES))
async def test_fault_is_recorded_with_its_cause(start_mock, fault):
    # request 1 is the capability probe; request 3 (the 2nd conversation) gets the fault
    mock = await start_mock(fault=fault, fault_every=3)
    convs = [conversation(f"c{i}", output_tokens=8) for i in range(3)]
    result, records = await run(mock.endpoint(), convs, single_pass())
    assert [r.status for r in records] == ["ok", "error", "ok"]
    failed = records[1]
    assert FAULT_MESSAGES[fault] in failed.error
    assert result.counts == {"ok": 2, "error": 1, "timeout": 0, "cancelled": 0}
    if fault == "http500":
        assert failed.http_status == 500 and failed.output_tokens == 0
    else:
        assert (
            failed.http_status == 200 and failed.output_tokens == 4 and failed.ttft_ms is not None
        )


async def test_failed_turn_ends_its_conversation(start_mock):
    mock = await start_mock(fault="http500", fault_every=3)
    _, records = await run(mock.endpoint(), [conversation("a", questions=3)], single_pass())
    assert [(r.turn_index, r.status) for r in records] == [(0, "ok"), (1, "error")]


async def test_timeout_is_recorded(start_mock):
    mock = await start_mock(fault="slow", fault_every=2, slow_s=1.0)
    endpoint = mock.endpoint(request_timeout_s=0.3)
    result, [record] = await run(endpoint, [conversation("a")], single_pass())
    assert record.status == "timeout"
    assert "timed out after 0.3 s" in record.error
    assert result.counts["timeout"] == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_recorded_not_raised():
    endpoint = EndpointConfig(base_url=f"http://127.0.0.1:{_free_port()}", model_name="m")
    result, records = await run(endpoint, [conversation("a"), conversation("b")], single_pass())
    assert [r.status for r in records] == ["error", "error"]
    assert all(r.error.startswith("connection refused") for r in records)
    assert any("probe failed" in note for note in result.notes)
    assert result.probed is None and endpoint.return_token_ids is None  # nothing decided


async def test_cancel_records_in_flight_as_cancelled(start_mock):
    mock = await start_mock(itl_ms=50)
    records = []
    plan = LevelPlan(strategy="concurrent", level=3, duration_s=30, max_requests=None)
    task = asyncio.ensure_future(
        run_level(
            mock.endpoint(),
            [conversation(f"c{i}", output_tokens=200) for i in range(3)],
            plan,
            cell_id="x",
            clock=RunClock(),
            on_record=records.append,
        )
    )
    while mock.server.state.in_flight < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(records) == 3
    assert {r.status for r in records} == {"cancelled"}
    assert all(r.error == "cancelled by the client" for r in records)


async def test_cancel_of_rate_level_records_in_flight(start_mock):
    mock = await start_mock(itl_ms=50)
    records = []
    plan = LevelPlan(
        strategy="constant", level=100, duration_s=30, max_requests=None, max_concurrency=2
    )
    task = asyncio.ensure_future(
        run_level(
            mock.endpoint(),
            [conversation("c", output_tokens=200)],
            plan,
            cell_id="x",
            clock=RunClock(),
            on_record=records.append,
        )
    )
    while mock.server.state.in_flight < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.status for r in records] == ["cancelled", "cancelled"]
