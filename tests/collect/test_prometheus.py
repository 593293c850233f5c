import math
from pathlib import Path

import pytest

from kvbench.collect.prometheus import PrometheusParseError, counter_sum, parse_metrics

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm-0.32-cpu-metrics.txt"


def test_vllm_reference_page():
    samples = parse_metrics(REFERENCE.read_text())
    by_name = {}
    for s in samples:
        by_name.setdefault(s.name, []).append(s)
    hits = by_name["vllm:prefix_cache_hits_total"][0]
    assert (
        hits.value == 9088.0 and hits.type == "counter" and hits.family == "vllm:prefix_cache_hits"
    )
    assert hits.labels == {"engine": "0", "model_name": "tiny-qwen3"}
    assert counter_sum(samples, "vllm:prefix_cache_queries_total") == 34845.0
    buckets = by_name["vllm:time_to_first_token_seconds_bucket"]
    assert all(
        b.family == "vllm:time_to_first_token_seconds" and b.type == "histogram" for b in buckets
    )
    assert buckets[-1].labels["le"] == "+Inf"
    assert (
        by_name["vllm:time_to_first_token_seconds_count"][0].family
        == "vllm:time_to_first_token_seconds"
    )
    assert by_name["process_resident_memory_bytes"][0].value == 6.56191488e08
    assert not [s for s in samples if s.type == "untyped"]


def test_escapes_special_values_and_timestamps():
    text = (
        '# HELP x_total A "quoted" help\\nline\n'
        "# TYPE x_total counter\n"
        'x_total{path="a\\"b\\\\c",note="x\\ny",empty=""} 3 1700000000000\n'
        "# TYPE lat summary\n"
        'lat{quantile="0.5"} NaN\n'
        "lat_sum +Inf\n"
        "lat_count -Inf\n"
        "plain 1.5e3\n"
    )
    x, q, total, count, plain = parse_metrics(text)
    assert x.labels == {"path": 'a"b\\c', "note": "x\ny", "empty": ""}
    assert (x.value, x.timestamp_ms, x.family, x.type) == (3.0, 1700000000000, "x", "counter")
    assert math.isnan(q.value) and q.family == "lat" and q.type == "summary"
    assert total.value == math.inf and count.value == -math.inf and total.family == "lat"
    assert (plain.value, plain.type) == (1500.0, "untyped")


def test_a_malformed_line_names_its_number():
    with pytest.raises(PrometheusParseError, match="line 2"):
        parse_metrics("ok 1\nbroken{a=unquoted} 2\n")
    with pytest.raises(PrometheusParseError, match="line 1"):
        parse_metrics("novalue\n")
