"""SimStream.deliver keeps what RequestStream.deliver keeps (stamps, counts, tokens, finish) and
returns the same gaps; a record's to_row is what dataclasses.asdict gives."""

import dataclasses
import random

from kvbench.emulator.api.driver import RequestStream
from kvbench.emulator.engine.interface import (
    EngineRequest,
    FinishReason,
    RequestOutput,
    TierHits,
)
from kvbench.results.records import RequestRecord
from kvbench.simulate.engine_node import SimStream

KEPT = (
    "num_prompt_tokens",
    "num_cached_tokens",
    "hits",
    "num_preemptions",
    "output_token_ids",
    "finished",
    "finish_reason",
    "arrival_s",
    "scheduled_s",
    "first_token_s",
    "last_token_s",
)


def test_sim_stream_delivers_as_the_request_stream():
    rng = random.Random(5)
    for _ in range(30):
        request = EngineRequest("r", [1, 2, 3], max_tokens=50, arrival_s=0.5)
        live, sim = RequestStream(request, 1), SimStream(request, 1)
        now_s = 1.0
        for i in range(rng.randrange(1, 20)):
            end_s = now_s + rng.random() * 0.05
            last = i == 19 or rng.random() < 0.1
            output = RequestOutput(
                "r",
                [rng.randrange(100) for _ in range(rng.choice([0, 1, 1, 1, 3]))],
                last,
                FinishReason.LENGTH if last else None,
                rng.choice([0, 3]),
                rng.randrange(3),
                TierHits(gpu_tokens=rng.randrange(3)),
                rng.randrange(2),
            )
            assert sim.deliver(output, now_s, end_s) == live.deliver(output, now_s, end_s)
            assert [getattr(sim, k) for k in KEPT] == [getattr(live, k) for k in KEPT]
            now_s = end_s
            if last:
                break


def test_record_to_row_is_asdict():
    record = RequestRecord("a", "c", 2, "cell", itl_ms=[1.5, 2.0], cached_tokens=3, level=4.0)
    row = record.to_row()
    assert row == dataclasses.asdict(record)
    assert list(row) == list(dataclasses.asdict(record))
    assert row["itl_ms"] is not record.itl_ms
