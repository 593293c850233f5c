"""The part of GuideLLM's result JSON (report format of v0.5-0.8) that `import guidellm` reads, typed.

Contract: `parse_report(path)` returns a `GuideLLMReport` or raises a one-line `UserError` naming
the file and the JSON path of the first problem (`benchmarks.0.config.strategy.streams: Field
required`). Only the fields the import uses are declared; GuideLLM's many others are ignored
(`extra="ignore"`), so a newer GuideLLM that adds fields still imports. Every number must be finite.
Secrets in the file (the backend's `api_key`, request headers) are never read into these models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kvbench.errors import UserError
from kvbench.spec.experiment import format_validation_error

MAX_RESULT_BYTES = 2 * 2**30  # GuideLLM files of long sweeps reach hundreds of MB, not GBs
RATE_STRATEGIES = ("constant", "poisson", "async_constant", "async_poisson")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Timings(_Lenient):
    request_start: float | None = None
    request_end: float | None = None
    first_token_iteration: float | None = None
    targeted_start: float | None = None
    scheduled_at: float | None = None


class RequestInfo(_Lenient):
    request_id: str | int | None = None
    conversation_id: str | int | None = None
    turn_index: int | None = Field(default=None, ge=0)
    timings: Timings | None = None
    started_at: float | None = None
    error: str | None = None


class RequestStats(_Lenient):
    request_id: str | int | None = None
    info: RequestInfo = Field(default_factory=RequestInfo)
    request_start_time: float | None = None
    request_end_time: float | None = None
    request_latency: float | None = Field(default=None, ge=0)
    time_to_first_token_ms: float | None = Field(default=None, ge=0)
    prompt_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)


class RequestGroups(_Lenient):
    successful: list[RequestStats] = Field(default_factory=list)
    errored: list[RequestStats] = Field(default_factory=list)
    incomplete: list[RequestStats] = Field(default_factory=list)


class Strategy(_Lenient):
    type_: Literal[
        "synchronous",
        "concurrent",
        "throughput",
        "constant",
        "poisson",
        "async_constant",
        "async_poisson",
    ]
    streams: int | None = Field(default=None, gt=0)
    rate: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _has_its_level(self) -> Strategy:
        if self.type_ == "concurrent" and self.streams is None:
            raise ValueError("a concurrent strategy needs 'streams'")
        if self.type_ in RATE_STRATEGIES and self.rate is None:
            raise ValueError(f"a {self.type_} strategy needs 'rate'")
        return self


class Backend(_Lenient):
    target: str | None = None
    model: str | None = None
    request_format: str | None = None


class BenchmarkConfig(_Lenient):
    id_: str | None = None
    strategy: Strategy
    backend: Backend | None = None  # v0.5-0.7 keep it here; v0.8 in the report's config.spec


class SchedulerState(_Lenient):
    start_time: float | None = None


class Benchmark(_Lenient):
    config: BenchmarkConfig
    requests: RequestGroups
    start_time: float
    end_time: float | None = None
    warmup_duration: float | None = Field(default=None, ge=0)
    cooldown_duration: float | None = Field(default=None, ge=0)
    scheduler_state: SchedulerState | None = None

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> Benchmark:
        if self.end_time is not None and self.end_time < self.start_time:
            raise ValueError("end_time is before start_time")
        return self

    @property
    def first_start_time(self) -> float:
        scheduler = self.scheduler_state.start_time if self.scheduler_state else None
        return min(self.start_time, scheduler if scheduler is not None else self.start_time)


class Metadata(_Lenient):
    guidellm_version: str = "unknown"


class RunSpec(_Lenient):
    backend: Backend | None = None


class RunConfig(_Lenient):
    spec: RunSpec | None = None


class GuideLLMReport(_Lenient):
    metadata: Metadata = Field(default_factory=Metadata)
    config: RunConfig | None = None
    benchmarks: list[Benchmark] = Field(min_length=1)

    @property
    def backend(self) -> Backend:
        """The backend GuideLLM measured: the run's (v0.8), else the first benchmark's."""
        if self.config and self.config.spec and self.config.spec.backend:
            return self.config.spec.backend
        return self.benchmarks[0].config.backend or Backend()


def parse_report(path: Path) -> GuideLLMReport:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_RESULT_BYTES:
            raise UserError(f"{path}: {size} bytes; larger than any GuideLLM result file")
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(f"{path}: not JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UserError(f"{path}: not a GuideLLM result file (no top-level 'benchmarks' list)")
    try:
        return GuideLLMReport.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(f"{path}", err)) from None
    except RecursionError:
        raise UserError(f"{path}: nests too deeply for a GuideLLM result file") from None
