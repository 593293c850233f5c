"""Incremental Server-Sent Events parser (the `text/event-stream` framing OpenAI servers use).

Contract: `feed(data)` takes whatever bytes one TCP read produced and returns the `data` payloads of
every event completed by them, in order. An event may span any number of reads; one read may hold
many events. Lines end in LF, CRLF or CR; an event ends at a blank line; `data:` lines of one event
join with "\n"; comment lines (`: keep-alive`) and other fields (`event:`, `id:`, `retry:`) are
skipped. `pending()` tells whether bytes of an unfinished event remain (a truncated stream at EOF).
"""

from __future__ import annotations

_DATA_FIELD = b"data"


class SSEParser:
    __slots__ = ("_buffer", "_data_lines", "_saw_field")

    def __init__(self) -> None:
        self._buffer = b""  # bytes after the last complete line
        self._data_lines: list[bytes] = []  # data lines of the event being assembled
        self._saw_field = False  # a non-comment line of the current event was seen

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if not self._data_lines and not self._saw_field and b"\r" not in buffer:
            return self._feed_lf_events(buffer)
        events: list[bytes] = []
        start = 0
        length = len(buffer)
        while start < length:
            end, next_start = _find_line_end(buffer, start)
            if end < 0:
                break
            self._take_line(buffer[start:end], events)
            start = next_start
        self._buffer = buffer[start:]
        return events

    def _feed_lf_events(self, buffer: bytes) -> list[bytes]:
        """Fast path (LF line ends, no half-assembled event): split whole events at blank lines.

        The unfinished tail stays raw in the buffer, so no event state is left behind.
        """
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()
        events: list[bytes] = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                events.append(block[6:])
                continue
            for line in block.split(b"\n"):
                self._take_line(line, events)
            self._take_line(b"", events)
        return events

    def pending(self) -> bool:
        """True when the stream stopped inside an event (bytes or fields not yet ended by a blank line)."""
        return bool(self._buffer.strip()) or self._saw_field

    def _take_line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data_lines:
                events.append(b"\n".join(self._data_lines))
            self._data_lines = []
            self._saw_field = False
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        self._saw_field = True
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == _DATA_FIELD:
            self._data_lines.append(value)


def _find_line_end(buffer: bytes, start: int) -> tuple[int, int]:
    """(end of line, start of next line) or (-1, -1) when no full line is buffered.

    A lone CR at the very end of the buffer is not yet a line end: it may be the first half of CRLF.
    """
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
    if cr >= 0:
        if cr + 1 < len(buffer):
            return cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
        return -1, -1
    if lf >= 0:
        return lf, lf + 1
    return -1, -1
