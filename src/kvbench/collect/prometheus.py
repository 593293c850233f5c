"""Prometheus text exposition format (0.0.4) parser.

`parse_metrics(text)` returns every sample with its family: `# HELP` / `# TYPE` lines name a family;
a sample `x_total`, `x_bucket`, `x_sum`, `x_count` or `x_created` belongs to family `x` when `x` was
typed (counter / histogram / summary), otherwise it is its own family. Label values may hold
escaped quotes, backslashes and newlines (`\\"`, `\\\\`, `\\n`); values may be NaN, +Inf, -Inf.
A malformed line raises PrometheusParseError naming the line number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_gsum", "_gcount")
_VALUE_WORDS = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}


class PrometheusParseError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # the sample name as exposed, e.g. vllm:prefix_cache_hits_total
    labels: dict[str, str]
    value: float
    family: str  # e.g. vllm:prefix_cache_hits
    type: str  # counter | gauge | histogram | summary | untyped
    timestamp_ms: int | None = None


@dataclass
class _Families:
    types: dict[str, str] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)

    def family_of(self, sample_name: str) -> tuple[str, str]:
        if sample_name in self.types:
            return sample_name, self.types[sample_name]
        for suffix in _SUFFIXES:
            base = sample_name[: -len(suffix)]
            if sample_name.endswith(suffix) and base in self.types:
                return base, self.types[base]
        return sample_name, "untyped"


def parse_metrics(text: str) -> list[Sample]:
    families = _Families()
    samples: list[Sample] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _parse_comment(line, families)
            continue
        try:
            name, labels, value, ts = _parse_sample(line)
        except (ValueError, IndexError) as err:
            raise PrometheusParseError(f"line {number}: {err}: {raw[:120]!r}") from None
        family, kind = families.family_of(name)
        if kind == "counter" and family.endswith("_total"):  # old-style `# TYPE x_total counter`
            family = family[: -len("_total")]
        samples.append(Sample(name, labels, value, family, kind, ts))
    return samples


def _parse_comment(line: str, families: _Families) -> None:
    parts = line[1:].strip().split(None, 2)
    if len(parts) >= 3 and parts[0] == "TYPE":
        families.types[parts[1]] = parts[2].strip()
    elif len(parts) >= 2 and parts[0] == "HELP":
        families.help[parts[1]] = _unescape(parts[2]) if len(parts) == 3 else ""


def _parse_sample(line: str) -> tuple[str, dict[str, str], float, int | None]:
    brace = line.find("{")
    space = _first_whitespace(line)
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        labels, end = _parse_labels(line, brace + 1)
        rest = line[end:].split()
    else:
        if space == -1:
            raise ValueError("sample without a value")
        name, labels, rest = line[:space], {}, line[space:].split()
    if not name or not rest:
        raise ValueError("sample without a name or value")
    value = parse_value(rest[0])
    timestamp = int(rest[1]) if len(rest) > 1 else None
    return name, labels, value, timestamp


def _first_whitespace(line: str) -> int:
    positions = [p for p in (line.find(" "), line.find("\t")) if p != -1]
    return min(positions) if positions else -1


def _parse_labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    """Parse `k="v",...}` starting at `pos`; return the labels and the index after `}`."""
    labels: dict[str, str] = {}
    while True:
        while line[pos] in " \t,":
            pos += 1
        if line[pos] == "}":
            return labels, pos + 1
        eq = line.index("=", pos)
        key = line[pos:eq].strip()
        if line[eq + 1] != '"':
            raise ValueError(f"label {key} value is not quoted")
        value, pos = _read_quoted(line, eq + 2)
        labels[key] = value


def _read_quoted(line: str, pos: int) -> tuple[str, int]:
    out = []
    while True:
        char = line[pos]
        if char == "\\":
            nxt = line[pos + 1]
            out.append("\n" if nxt == "n" else nxt)
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\\\", "\\")


def parse_value(token: str) -> float:
    word = token.lower()
    if word in _VALUE_WORDS:
        return _VALUE_WORDS[word]
    return float(token)


def counter_sum(samples: list[Sample], name: str) -> float | None:
    """Sum of one sample name over all label sets (e.g. every engine's prefix_cache_hits_total)."""
    values = [s.value for s in samples if s.name == name]
    return sum(values) if values else None
