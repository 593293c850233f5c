"""The EPP's KV-event subscriber: one SUB socket that binds (llm-d default `tcp://*:5557`); every
engine's PUB connects to it. Messages are applied in arrival order by one task, so each pod's
events stay in publish order (llm-d shards by pod for the same guarantee).

Sequence numbers and replay (vLLM's ZmqEventPublisher numbers each publisher's messages from 0):
- The first message seen from a pod with a known replay endpoint triggers a replay from seq 0
  (whatever the engine published before the router subscribed: ZMQ drops it for a late joiner).
- A gap (seq > last + 1) triggers a replay from last + 1; without a replay endpoint the gap is
  counted and the message applied anyway.
- Replay protocol (vLLM's ROUTER replay socket): a DEALER sends [b"", start_seq 8-byte big-endian]
  and receives [b"", seq, payload] (or [seq, payload]) until seq == -1 (0xffff...ff).
- seq <= last is a duplicate already applied by a replay and is skipped, except seq 0 after a
  higher seq: the engine restarted, so its pod is cleared and its events start over.
- If the index store fails while applying, `last` is not advanced, so the missed messages come back
  through the next replay (attempted at most every `replay_retry_s`).
Where replay endpoints come from: `--replay-endpoint POD=tcp://host:port` flags of
`kvbench emulate router`, or `kvEventsConfig.replayEndpoints: {POD: URL}` (a kvbench extension)
in the precise scorer's parameters. POD is the topic's pod id as resolved to an endpoint address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from kvbench.emulator.router.events import (
    END_SEQ,
    EventDecodeError,
    apply_events,
    decode_payload,
    parse_topic,
)
from kvbench.emulator.router.index_memory import IndexUnavailable, KVBlockIndex

log = logging.getLogger(__name__)


@dataclass
class PodStream:
    model: str | None = None
    last_seq: int | None = None
    last_replay_attempt_s: float = float("-inf")
    last_outcome: str = ""


@dataclass
class SubscriberStats:
    messages: int = 0
    events: int = 0
    decode_errors: int = 0
    gaps: int = 0
    replays: int = 0
    replayed_messages: int = 0
    unrecoverable_gaps: int = 0
    # Messages this router never applied: sequence numbers skipped by a gap no replay covered
    # (no replay endpoint, replay failed, or the replay buffer no longer held them).
    lost_messages: int = 0
    apply_failures: int = 0
    restarts: int = 0


@dataclass
class KVEventSubscriber:
    index: KVBlockIndex
    endpoint: str = "tcp://*:5557"
    topic_filter: str = "kv@"
    replay_endpoints: dict[str, str] = field(default_factory=dict)
    resolve_pod: Callable[[str], str] = lambda pod: pod
    clock: Callable[[], float] = lambda: 0.0
    replay_timeout_s: float = 1.0
    replay_retry_s: float = 0.5
    replay_poll_s: float = 0.5
    stats: SubscriberStats = field(default_factory=SubscriberStats)
    streams: dict[str, PodStream] = field(default_factory=dict)

    async def start(self) -> None:
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.SUBSCRIBE, self.topic_filter.encode())
        self._socket.setsockopt(zmq.RCVHWM, 100_000)
        try:
            self._socket.bind(self.endpoint)
        except zmq.ZMQError:
            self._socket.close(linger=0)
            self._context.term()
            raise
        self._lock = asyncio.Lock()
        self._tasks = [asyncio.create_task(self._loop(), name="kv-event-subscriber")]
        if self.replay_endpoints and self.replay_poll_s > 0:
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="kv-event-replay-poll"))

    @property
    def started(self) -> bool:
        return bool(getattr(self, "_tasks", None))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._socket.close(linger=0)
        self._context.term()

    async def _loop(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            try:
                async with self._lock:
                    await self.handle_message(frames)
            except EventDecodeError as err:
                self.stats.decode_errors += 1
                log.warning("KV event dropped: %s", err)

    async def handle_message(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            raise EventDecodeError(f"{len(frames)} frames, expected [topic, seq, payload]")
        topic_pod, model = parse_topic(frames[0].decode("utf-8", "replace"))
        pod = self.resolve_pod(topic_pod)
        seq = int.from_bytes(frames[1], "big")
        self.stats.messages += 1
        stream = self.streams.setdefault(pod, PodStream())
        stream.model = model
        self.note_model(model)
        if stream.last_seq is not None and seq <= stream.last_seq:
            if seq != 0:
                return  # duplicate of a replayed message
            self.stats.restarts += 1
            await self._safe_clear(pod)
            stream.last_seq = None
        expected = 0 if stream.last_seq is None else stream.last_seq + 1
        if seq > expected:  # a gap, or a pod that published before this subscriber joined
            outcome = await self._try_replay(pod, model, stream, expected)
            if outcome in ("store_down", "throttled"):
                return  # `last_seq` did not move: this message comes back with the next replay
            if outcome == "done" and stream.last_seq is not None and seq <= stream.last_seq:
                return
            if outcome != "done":
                self.stats.gaps += 1
                self.stats.lost_messages += seq - expected
        await self._apply(pod, model, stream, seq, frames[2])

    def note_model(self, model: str) -> None:
        """The model this pool serves, as last seen on a topic or a routed request."""
        self._last_model = model

    async def _poll_loop(self) -> None:
        """Catch up every pod with a replay endpoint: covers the messages a late-joining SUB lost
        when no later message arrives to reveal the gap. A pod not heard from yet is assumed to
        serve the model last seen on a topic or a routed request (an InferencePool serves one model)."""
        while True:
            await asyncio.sleep(self.replay_poll_s)
            for pod, url in list(self.replay_endpoints.items()):
                stream = self.streams.setdefault(pod, PodStream())
                model = stream.model or getattr(self, "_last_model", None)
                if model is None:
                    continue
                start_seq = 0 if stream.last_seq is None else stream.last_seq + 1
                try:
                    messages = await request_replay(
                        self._context, url, start_seq, self.replay_timeout_s
                    )
                except (TimeoutError, zmq.ZMQError, IndexError):
                    continue  # the engine is not up (yet): try again next round
                async with self._lock:
                    stream.model = stream.model or model
                    await self._apply_replayed(pod, stream.model, stream, start_seq, messages)

    async def _apply(
        self, pod: str, model: str, stream: PodStream, seq: int, payload: bytes
    ) -> bool:
        batch = decode_payload(payload)
        try:
            await apply_events(self.index, pod, model, batch.events)
        except IndexUnavailable as err:
            self.stats.apply_failures += 1
            log.debug("KV events of %s seq %d not applied: %s", pod, seq, err)
            return False
        self.stats.events += len(batch.events)
        stream.last_seq = seq
        return True

    async def _safe_clear(self, pod: str) -> None:
        try:
            await self.index.clear_pod(pod)
        except IndexUnavailable as err:
            log.warning("could not clear %s after its restart: %s", pod, err)

    async def _try_replay(self, pod: str, model: str, stream: PodStream, start_seq: int) -> str:
        """Replay [start_seq, ...] from the pod's replay endpoint.

        -> "done" (ran to its end), "failed" (no endpoint, or it did not answer: apply live
        messages as they come), "store_down" (the index failed while applying), "throttled" (the
        last attempt hit a down store less than `replay_retry_s` ago)."""
        url = self.replay_endpoints.get(pod)
        if url is None:
            return "failed"
        if (
            stream.last_outcome == "store_down"
            and self.clock() - stream.last_replay_attempt_s < self.replay_retry_s
        ):
            return "throttled"
        stream.last_replay_attempt_s = self.clock()
        stream.last_outcome = await self._replay(pod, model, stream, url, start_seq)
        return stream.last_outcome

    async def _replay(
        self, pod: str, model: str, stream: PodStream, url: str, start_seq: int
    ) -> str:
        self.stats.replays += 1
        try:
            messages = await request_replay(self._context, url, start_seq, self.replay_timeout_s)
        except (TimeoutError, zmq.ZMQError, IndexError) as err:
            log.warning("replay from %s for %s failed: %s", url, pod, err)
            return "failed"
        return await self._apply_replayed(pod, model, stream, start_seq, messages)

    async def _apply_replayed(
        self,
        pod: str,
        model: str,
        stream: PodStream,
        start_seq: int,
        messages: list[tuple[int, bytes]],
    ) -> str:
        fresh = [
            (seq, data)
            for seq, data in messages
            if stream.last_seq is None or seq > stream.last_seq
        ]
        first_missing = 0 if stream.last_seq is None else stream.last_seq + 1
        if fresh and fresh[0][0] > first_missing:
            self.stats.unrecoverable_gaps += 1
            self.stats.lost_messages += fresh[0][0] - first_missing
            log.warning(
                "replay of %s starts at %d > %d: older events are lost", pod, fresh[0][0], start_seq
            )
        for seq, payload in fresh:
            self.stats.replayed_messages += 1
            try:
                applied = await self._apply(pod, model, stream, seq, payload)
            except EventDecodeError as err:
                self.stats.decode_errors += 1
                log.warning("replayed KV event dropped: %s", err)
                stream.last_seq = seq
                continue
            if not applied:
                return "store_down"
        return "done"


async def request_replay(
    context: zmq.asyncio.Context, url: str, start_seq: int, timeout_s: float
) -> list[tuple[int, bytes]]:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(url)
    try:
        await socket.send_multipart([b"", start_seq.to_bytes(8, "big")])
        messages: list[tuple[int, bytes]] = []
        while True:
            frames = await asyncio.wait_for(socket.recv_multipart(), timeout_s)
            if frames and frames[0] == b"":
                frames = frames[1:]
            seq = int.from_bytes(frames[0], "big")
            if seq == END_SEQ:
                return messages
            messages.append((seq, frames[1]))
    finally:
        socket.close()
