"""A synchronous connection to a Redis / Valkey KV-block index's server, for the simulated router's
own writes and lookups (index_batch.py, index_lookup.py).

The simulated router calls the index from the discrete-event loop, one call at a time, and waits
for each answer: an asyncio loop per call (the live index's client) and redis-py's per-reply
Python only add their own turns. `StoreLink.call` sends one packed request of pipelined commands
and parses their replies with hiredis (C) on a blocking socket of its own, to the same server and
database as the index (`RedisIndex.url`: `redis://host:port[/db]`, no auth: the stores this
project starts), with the index's fault semantics (`RedisIndex._run`): an open circuit breaker
refuses at once; any failure (connection, timeout, an error reply, a failed check) drops the
connection, opens the breaker for `breaker_open_s` on the index's clock and raises
`IndexUnavailable`. The deadline is the index's `timeout_s` per socket operation (live: per
operation; the simulated router's is a wall-clock guard against a frozen store only).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import hiredis

from kvbench.emulator.router.index_memory import IndexUnavailable
from kvbench.emulator.router.index_redis import RedisIndex

RECV_BYTES = 1 << 16


def tcp_address(url: str) -> tuple[str, int, int] | None:
    """(host, port, db) of a plain `redis://host:port[/db]` URL; None for any other form."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.username or parts.password or parts.query:
        return None
    if parts.hostname is None or parts.port is None:
        return None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        return None
    return parts.hostname, parts.port, int(path or 0)


class StoreLink:
    """Raises ValueError for an index URL it cannot reach (the caller keeps the index's client)."""

    def __init__(self, index: RedisIndex) -> None:
        address = tcp_address(index.url)
        if address is None:
            raise ValueError(f"no synchronous link to {index.url!r}")
        self.index = index
        self.host, self.port, self.db = address
        self._socket: socket.socket | None = None
        self._reader = hiredis.Reader(encoding="utf-8")

    def call(
        self,
        packed: bytes,
        num_replies: int = 1,
        check: Callable[[list[Any]], None] | None = None,
    ) -> list[Any]:
        """Send `packed` (RESP bytes of `num_replies` commands); their replies, in order. `check`
        may raise on replies that are a failure (counted as one, as an error reply is)."""
        index = self.index
        if index.breaker_open():
            raise IndexUnavailable(f"{index.name} index: circuit open")
        try:
            replies = self._exchange(packed, num_replies)
            if check is not None:
                check(replies)
        except Exception as err:  # noqa: BLE001  (any store failure degrades, as RedisIndex._run)
            self.close()  # a reply may be half read: never reuse this connection
            index._open_until_s = index.clock() + index.breaker_open_s
            raise IndexUnavailable(f"{index.name} index: {type(err).__name__}: {err}") from err
        return replies

    def _exchange(self, packed: bytes, num_replies: int) -> list[Any]:
        sock = self._socket if self._socket is not None else self._connect()
        sock.sendall(packed)
        return self._read(sock, num_replies)

    def _read(self, sock: socket.socket, num_replies: int) -> list[Any]:
        reader = self._reader
        replies: list[Any] = []
        while len(replies) < num_replies:
            reply = reader.gets()
            if reply is False:  # needs more bytes
                data = sock.recv(RECV_BYTES)
                if not data:
                    raise ConnectionError("the store closed the connection")
                reader.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise reply
            replies.append(reply)
        return replies

    def _connect(self) -> socket.socket:
        timeout_s = self.index.timeout_s
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = hiredis.Reader(encoding="utf-8")
        self._socket = sock
        if self.db:
            db = b"%d" % self.db
            sock.sendall(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(db), db))
            self._read(sock, 1)
        return sock

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
