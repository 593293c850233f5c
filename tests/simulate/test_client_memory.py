"""A finished turn is freed when it finishes: its pending timeout holds it weakly (a 600 s timeout
would otherwise keep every turn's outcome and routing decision alive for 600 simulated seconds),
and a turn that runs past its timeout is still timed out."""

import gc
from types import SimpleNamespace

from kvbench.emulator.engine.interface import FinishReason, RequestOutput
from kvbench.loadgen.history import ConversationSource
from kvbench.results.records import Phase
from kvbench.simulate.client import SimClient, _InFlight
from kvbench.simulate.engine_node import SimStream
from kvbench.simulate.events import EventLoop
from kvbench.simulate.front import PromptFront
from kvbench.workload.types import Conversation, Turn


class StubEngine:
    """Answers every request with one finished output `service_s` after it is submitted."""

    address = "stub:8000"

    def __init__(self, loop: EventLoop, service_s: float) -> None:
        self.loop, self.service_s = loop, service_s
        self.aborted: list[str] = []

    def submit(self, request, listener, every_output=True):
        stream = SimStream(request, 1)

        def answer() -> None:
            if request.request_id in self.aborted:
                return
            output = RequestOutput(request.request_id, [7], True, FinishReason.LENGTH, 2)
            stream.deliver(output, self.loop.now_s, self.loop.now_s)
            listener(stream, self.loop.now_s, 1)

        self.loop.after(self.service_s, answer)
        return stream

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


class StubRouter:
    def __init__(self, engine: StubEngine) -> None:
        self.engine = engine

    def route(self, request, prompt_tokens):
        return SimpleNamespace(scheduling_s=0.0, predicted_hit_tokens=0), self.engine

    def complete(self, decision, duration_s) -> None:
        pass


def run_turns(service_s: float, timeout_s: float, turns: int = 5):
    loop = EventLoop()
    engine = StubEngine(loop, service_s)
    client = SimClient(
        loop, StubRouter(engine), "m", timeout_s, False, PromptFront(None, 4096, 1000)
    )
    records = []
    sender = client.level("cell", 1.0, records.append)
    source = ConversationSource(
        [Conversation(f"c{i}", (1, 2), [Turn((3,), 1)]) for i in range(turns)],
        cycle=False,
        seed=0,
    )
    for _ in range(turns):
        sender.send(source.next(), 0.0, Phase.MEASURE, lambda state, more: None)
    return loop, records


def alive_turns() -> int:
    gc.collect()
    return sum(isinstance(o, _InFlight) for o in gc.get_objects())


def test_finished_turns_are_freed_before_their_timeouts_fire():
    loop, records = run_turns(service_s=0.01, timeout_s=600.0)
    loop.run(lambda: len(records) == 5)
    assert [r.status for r in records] == ["ok"] * 5
    assert loop.pending >= 5  # the timeouts are still on the heap
    assert alive_turns() == 0
    loop.run(lambda: False)  # the timeouts fire and do nothing
    assert len(records) == 5


def test_a_turn_past_its_timeout_is_still_timed_out():
    loop, records = run_turns(service_s=5.0, timeout_s=1.0, turns=2)
    loop.run(lambda: False)
    assert [r.status for r in records] == ["timeout", "timeout"]
