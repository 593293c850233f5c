"""The router in front of two real emulated engines (kvbench.emulator.api): a conversation's later
turns land on the engine that holds its prefix, and cache-aware routing beats round-robin on the
prefix hit rate of a small deterministic multi-conversation workload."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp

from kvbench.emulator.api.server import start_emulated_engine
from kvbench.emulator.engine.interface import EngineArgs
from kvbench.emulator.router.config import load_config_text
from kvbench.emulator.router.index_memory import IndexUnavailable
from kvbench.emulator.router.precise import block_keys
from kvbench.emulator.router.serve import Router, RouterOptions
from kvbench.emulator.stores import free_port

MODEL = "Qwen/Qwen3-0.6B"
CONVERSATIONS, TURNS = 7, 4  # odd: round-robin cannot keep a conversation on one engine by accident
PREFIX_TOKENS, TURN_TOKENS = 96, 40

PRECISE = """
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenProcessorConfig: {{blockSize: 16, hashSeed: "42"}}
    indexerConfig: {{kvBlockIndexConfig: {index}}}
    kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:{zmq_port}"}}
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: precise-prefix-cache-scorer, weight: 2}}
  - {{pluginRef: queue-scorer, weight: 1}}
"""

APPROXIMATE = """
plugins:
- type: prefix-cache-scorer
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 2}
  - {pluginRef: queue-scorer, weight: 1}
"""


def conversation_prompts() -> list[list[list[int]]]:
    """prompts[c][t]: a unique system prefix, then each turn appends new user tokens."""
    rng = random.Random(5)
    prompts = []
    for _ in range(CONVERSATIONS):
        tokens = [rng.randrange(1000, 100_000) for _ in range(PREFIX_TOKENS)]
        turns = []
        for _ in range(TURNS):
            tokens = tokens + [rng.randrange(1000, 100_000) for _ in range(TURN_TOKENS)]
            turns.append(tokens)
        prompts.append(turns)
    return prompts


async def start_engines(zmq_port: int | None) -> tuple[list, dict[str, str]]:
    """Two engines publishing KV events (sha256_cbor, PYTHONHASHSEED=42) with replay sockets."""
    engines, replays = [], {}
    for _ in range(2):
        port = free_port()
        events = None
        if zmq_port is not None:
            replay_url = f"tcp://127.0.0.1:{free_port()}"
            replays[f"127.0.0.1:{port}"] = replay_url
            events = {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": f"tcp://127.0.0.1:{zmq_port}",
                "replay_endpoint": replay_url,
                "topic": f"kv@127.0.0.1:{port}@{MODEL}",
            }
        args = EngineArgs(
            model=MODEL,
            num_gpu_blocks_override=512,
            max_model_len=2048,
            block_size=16,
            prefix_caching_hash_algo="sha256_cbor",
            enable_prompt_tokens_details=True,
            kv_events_config=events,
            env={"PYTHONHASHSEED": "42"},
        )
        engines.append(await start_emulated_engine(args, "127.0.0.1", port))
    return engines, replays


async def complete(session, url: str, prompt: list[int]) -> tuple[int, int, str]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 2}
    async with session.post(url + "/v1/completions", json=body) as response:
        assert response.status == 200
        usage = (await response.json())["usage"]
        endpoint = response.headers.get("x-kvbench-endpoint", url.split("//")[1])
        return usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"], endpoint


async def wait_for_index(router: Router, prompts: list[list[int]]) -> None:
    """Wait (bounded) until the index holds every full block of these prompts: KV events are async."""
    scorer = router.plugins.scheduler.scorers[0].scorer
    for _ in range(300):
        try:
            found = [
                len(await scorer.index.lookup(MODEL, block_keys(p, 16, "42"))) for p in prompts
            ]
        except IndexUnavailable:  # a store round trip over its deadline on a loaded host: ask again
            found = []
        if found == [len(p) // 16 for p in prompts]:
            return
        await asyncio.sleep(0.01)


async def run_workload(
    policy: str, tmp_path, index: str = "{inMemoryConfig: {size: 100000}}"
) -> tuple[float, dict[int, list[str]]]:
    """-> (prefix hit rate = cached / prompt tokens, the endpoint of each conversation's turns)."""
    zmq_port = free_port() if policy == "precise" else None
    engines, replays = await start_engines(zmq_port)
    router = None
    if policy != "round-robin":
        config = (
            PRECISE.format(zmq_port=zmq_port, index=index) if policy == "precise" else APPROXIMATE
        )
        options = RouterOptions(
            endpoints=[e.url for e in engines],
            decision_log=tmp_path / f"{policy}.jsonl",
            replay_endpoints=replays,
        )
        router = await Router(load_config_text(config), options).start()
    prompts = conversation_prompts()
    cached = total = 0
    placements: dict[int, list[str]] = {c: [] for c in range(CONVERSATIONS)}
    try:
        async with aiohttp.ClientSession() as session:
            for turn in range(TURNS):
                for conversation in range(CONVERSATIONS):
                    request_index = turn * CONVERSATIONS + conversation
                    url = router.url if router else engines[request_index % 2].url
                    hit, prompt_tokens, endpoint = await complete(
                        session, url, prompts[conversation][turn]
                    )
                    cached, total = cached + hit, total + prompt_tokens
                    placements[conversation].append(endpoint)
                if policy == "precise":
                    await wait_for_index(router, [prompts[c][turn] for c in range(CONVERSATIONS)])
    finally:
        if router is not None:
            await router.stop()
        for engine in engines:
            await engine.stop()
    return cached / total, placements


async def test_cache_aware_routing_keeps_conversations_on_their_engine_and_beats_round_robin(
    tmp_path,
):
    rr_rate, rr_placements = await run_workload("round-robin", tmp_path)
    precise_rate, precise_placements = await run_workload("precise", tmp_path)
    approx_rate, approx_placements = await run_workload("approximate", tmp_path)
    print(
        f"\nprefix hit rate: round-robin {rr_rate:.3f}, precise {precise_rate:.3f}, approximate {approx_rate:.3f}"
    )
    for placements in (precise_placements, approx_placements):
        assert all(len(set(turns)) == 1 for turns in placements.values()), placements
    assert any(len(set(turns)) == 2 for turns in rr_placements.values())
    assert precise_rate > rr_rate and approx_rate > rr_rate
    # Every later turn hits its whole previous prompt's full blocks: the exact optimum here.
    best = (
        sum(((PREFIX_TOKENS + t * TURN_TOKENS) // 16) * 16 for t in range(1, TURNS)) * CONVERSATIONS
    )
    total = sum(PREFIX_TOKENS + (t + 1) * TURN_TOKENS for t in range(TURNS)) * CONVERSATIONS
    assert precise_rate == best / total
    decisions = [json.loads(line) for line in (tmp_path / "precise.jsonl").read_text().splitlines()]
    later = decisions[CONVERSATIONS:]
    # the router predicted exactly the hit the engine then reported: the previous prompt's full blocks
    assert [d["predicted_hit_tokens"] for d in later] == [
        ((PREFIX_TOKENS + t * TURN_TOKENS) // 16) * 16
        for t in range(1, TURNS)
        for _ in range(CONVERSATIONS)
    ]


async def test_precise_routing_through_a_redis_or_valkey_index(tmp_path, kv_store_server):
    """The seeds' llm-d-redis / llm-d-valkey scenarios: engine KV events -> real store -> routing."""
    kind = kv_store_server.kind
    index = f'{{{kind}Config: {{address: "{kv_store_server.url}"}}}}'
    rate, placements = await run_workload("precise", tmp_path, index)
    print(f"\nprefix hit rate, precise with a {kind} index: {rate:.3f}")
    assert all(len(set(turns)) == 1 for turns in placements.values()), placements
    best = (
        sum(((PREFIX_TOKENS + t * TURN_TOKENS) // 16) * 16 for t in range(1, TURNS)) * CONVERSATIONS
    )
    total = sum(PREFIX_TOKENS + (t + 1) * TURN_TOKENS for t in range(TURNS)) * CONVERSATIONS
    assert rate == best / total
