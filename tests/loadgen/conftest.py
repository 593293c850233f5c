"""Fixtures for the load generator tests: an in-process aiohttp mock on a free loopback port."""

from __future__ import annotations

import pytest
from aiohttp import web

from kvbench.loadgen.api import EndpointConfig, LevelPlan, RunClock, run_level
from kvbench.loadgen.mock_server import MockConfig, MockServer
from kvbench.workload.types import Conversation, Turn


class RunningMock:
    def __init__(self, server: MockServer, runner: web.AppRunner, port: int) -> None:
        self.server = server
        self.runner = runner
        self.base_url = f"http://127.0.0.1:{port}"

    def endpoint(self, **overrides) -> EndpointConfig:
        return EndpointConfig(base_url=self.base_url, model_name="mock-model", **overrides)


@pytest.fixture
async def start_mock():
    runners: list[web.AppRunner] = []

    async def start(**config) -> RunningMock:
        server = MockServer(MockConfig(**config))
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return RunningMock(server, runner, port)

    yield start
    for runner in runners:
        await runner.cleanup()


def conversation(
    cid: str,
    *,
    prefix: tuple[int, ...] = (1, 2, 3, 4),
    questions: int = 1,
    question_len: int = 2,
    output_tokens: int = 3,
    group: int | None = 0,
    think_time_s: float = 0.0,
) -> Conversation:
    turns = [
        Turn(
            question_token_ids=tuple(100 + 10 * k + i for i in range(question_len)),
            output_tokens=output_tokens,
        )
        for k in range(questions)
    ]
    return Conversation(
        conversation_id=cid,
        prefix_token_ids=prefix,
        turns=turns,
        prefix_group=group,
        think_time_s=think_time_s,
    )


async def run(endpoint: EndpointConfig, conversations, plan: LevelPlan, cell_id: str = "cell"):
    records = []
    result = await run_level(
        endpoint, conversations, plan, cell_id=cell_id, clock=RunClock(), on_record=records.append
    )
    return result, records


def single_pass(strategy: str = "synchronous", level: float = 1, **kw) -> LevelPlan:
    return LevelPlan(strategy=strategy, level=level, duration_s=None, max_requests=None, **kw)
