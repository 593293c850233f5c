"""What one HTTP request produced, before it becomes a `RequestRecord` (see recorder.py).

Times are `time.perf_counter()` seconds (the RunClock's base), so the recorder converts them to
seconds-from-run-start with one subtraction. Token arrivals are kept per chunk: `(arrival, tokens)`,
where `tokens` is how many tokens that chunk carried (from returned token ids when the server sends
them, else 1 per chunk with text).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvbench.results.records import RequestStatus


@dataclass(slots=True)
class RequestOutcome:
    sent_perf: float
    status: str = RequestStatus.OK.value
    error: str | None = None
    http_status: int | None = None
    end_perf: float | None = None
    chunk_arrivals: list[tuple[float, int]] = field(default_factory=list)
    usage: dict | None = None
    output_token_ids: list[int] = field(default_factory=list)
    output_text_parts: list[str] = field(default_factory=list)
    token_ids_returned: bool = False  # at least one chunk carried `token_ids`
    headers: dict[str, str] = field(default_factory=dict)  # the kvbench/llm-d headers we read
    done_seen: bool = False  # `data: [DONE]` (or a complete non-streaming body) arrived

    @property
    def first_token_perf(self) -> float | None:
        return self.chunk_arrivals[0][0] if self.chunk_arrivals else None

    @property
    def streamed_tokens(self) -> int:
        return sum(tokens for _, tokens in self.chunk_arrivals)

    def fail(self, status: RequestStatus, error: str) -> None:
        """Record the first failure only: a later cleanup error must not hide the cause."""
        if self.status == RequestStatus.OK.value:
            self.status = status.value
            self.error = error
