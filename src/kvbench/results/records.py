"""The per-request record: one row of `cells/<cell_id>/requests.parquet`.

Contract: times are seconds from run start on a monotonic clock;
durations are milliseconds; token counts are tokens. TTFT = first token received - request sent;
ITL = gaps between token arrivals, a chunk of k tokens counting as k gaps (each gap = chunk gap / k);
TPOT = (e2e - ttft) / (output_tokens - 1) (vLLM / inference-perf definition).

Fields that the server did not report are None, never 0: "no cached tokens reported" is different
from "zero cached tokens".
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa


class RequestStatus(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Phase(str, enum.Enum):
    """Where in the cell's window the request was scheduled; only MEASURE counts in statistics."""

    PRIME = "prime"
    WARMUP = "warmup"
    MEASURE = "measure"
    COOLDOWN = "cooldown"


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    conversation_id: str
    turn_index: int
    cell_id: str
    phase: str = Phase.MEASURE.value
    # Seconds from run start (monotonic). scheduled_s is when the strategy wanted the request out;
    # sent_s when it actually went; a growing gap means the client fell behind its schedule.
    scheduled_s: float = 0.0
    sent_s: float = 0.0
    first_token_s: float | None = None
    end_s: float | None = None
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, when reported
    status: str = RequestStatus.OK.value
    error: str | None = None
    http_status: int | None = None
    endpoint: str | None = None  # the pod that served it (response header), when known
    # Emulator tier attribution (x-kvbench-kv-hits header / usage.kvbench), when reported.
    gpu_hit_tokens: int | None = None
    cpu_hit_tokens: int | None = None
    remote_hit_tokens: int | None = None
    router_predicted_hit_tokens: int | None = None
    # Workload facts: which prefix this request reuses and how long since it was last sent.
    prefix_group: int | None = None
    reused_prefix_tokens: int | None = None
    reuse_distance_tokens: int | None = None
    reuse_distance_s: float | None = None
    history_synthesized: bool = False  # answer history made up by the client (no return_token_ids)
    level: float | None = None  # the load level (concurrency or rate) the request ran under

    def to_row(self) -> dict:
        """What `dataclasses.asdict` gives (every field but itl_ms is a plain value; the list is
        copied), without its deep copy of each ITL gap."""
        row = {name: getattr(self, name) for name in RECORD_FIELDS}
        row["itl_ms"] = list(self.itl_ms)
        return row


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))


def records_from_frame(frame: Any) -> list[RequestRecord]:
    """Rows of a requests.parquet DataFrame back as records (NaN / missing -> None, the field's
    default where it has one: a file written without phases counts every request as measured)."""
    if frame is None or len(frame) == 0:
        return []
    records = []
    columns = [name for name in RECORD_FIELDS if name in frame.columns]
    for row in frame[columns].to_dict("records"):
        values = {key: _plain(value) for key, value in row.items()}
        values = {key: value for key, value in values.items() if value is not None}
        values["itl_ms"] = [float(gap) for gap in values.get("itl_ms", [])]
        for key in _INT_FIELDS:
            if key in values:
                values[key] = int(values[key])
        records.append(RequestRecord(**values))
    return records


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalar
        return _plain(value.item())
    return value


_INT_FIELDS = tuple(
    f.name for f in fields(RequestRecord) if f.type in ("int", "int | None")
)  # pandas reads a nullable int column as float when it holds nulls
_NULLABLE_INT = pa.int64()
_NULLABLE_FLOAT = pa.float64()

REQUEST_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("conversation_id", pa.string()),
        ("turn_index", pa.int32()),
        ("cell_id", pa.string()),
        ("phase", pa.string()),
        ("scheduled_s", pa.float64()),
        ("sent_s", pa.float64()),
        ("first_token_s", _NULLABLE_FLOAT),
        ("end_s", _NULLABLE_FLOAT),
        ("ttft_ms", _NULLABLE_FLOAT),
        ("e2e_ms", _NULLABLE_FLOAT),
        ("tpot_ms", _NULLABLE_FLOAT),
        ("itl_ms", pa.list_(pa.float64())),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cached_tokens", _NULLABLE_INT),
        ("status", pa.string()),
        ("error", pa.string()),
        ("http_status", _NULLABLE_INT),
        ("endpoint", pa.string()),
        ("gpu_hit_tokens", _NULLABLE_INT),
        ("cpu_hit_tokens", _NULLABLE_INT),
        ("remote_hit_tokens", _NULLABLE_INT),
        ("router_predicted_hit_tokens", _NULLABLE_INT),
        ("prefix_group", _NULLABLE_INT),
        ("reused_prefix_tokens", _NULLABLE_INT),
        ("reuse_distance_tokens", _NULLABLE_INT),
        ("reuse_distance_s", _NULLABLE_FLOAT),
        ("history_synthesized", pa.bool_()),
        ("level", _NULLABLE_FLOAT),
    ]
)

assert tuple(REQUEST_SCHEMA.names) == RECORD_FIELDS, (
    "REQUEST_SCHEMA must list RequestRecord's fields in order"
)

# server_metrics.parquet: long format, one row per sample of one series.
SERVER_METRICS_SCHEMA = pa.schema(
    [
        ("ts_s", pa.float64()),  # seconds from run start (monotonic)
        ("source", pa.string()),  # e.g. "engine-0", "router"; the scrape URL is in cell.json
        ("metric", pa.string()),  # Prometheus sample name, e.g. vllm:prefix_cache_hits_total
        ("labels", pa.string()),  # JSON object of the sample's labels, keys sorted
        ("value", pa.float64()),
    ]
)

# system_metrics.parquet: long format as well, so new probes need no schema change.
SYSTEM_METRICS_SCHEMA = pa.schema(
    [
        ("ts_s", pa.float64()),
        ("source", pa.string()),  # "client", "host", "gpu:0", a server pid, ...
        ("metric", pa.string()),  # e.g. cpu_percent, rss_bytes, event_loop_lag_ms, dispatch_lag_ms
        ("value", pa.float64()),
    ]
)
