"""How long the collector's Prometheus parser takes on a real vLLM 0.32 /metrics page (475 samples).

Prints and saves JSON to benchmarks/results/harness_prometheus_parse.json. Not a test: no gate.
"""

import json
import time
from pathlib import Path

from kvbench.collect.prometheus import parse_metrics
from kvbench.collect.scraper import sample_rows

PAGE = (
    Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vllm-0.32-cpu-metrics.txt"
).read_text()
ROUNDS = 200


def main() -> None:
    start = time.perf_counter()
    for _ in range(ROUNDS):
        samples = parse_metrics(PAGE)
    parse_ms = (time.perf_counter() - start) / ROUNDS * 1000
    start = time.perf_counter()
    for _ in range(ROUNDS):
        rows = sample_rows(0.0, "engine-0", samples)
    rows_ms = (time.perf_counter() - start) / ROUNDS * 1000
    result = {
        "samples": len(samples),
        "rows_kept": len(rows),
        "parse_ms_per_page": round(parse_ms, 3),
        "to_rows_ms_per_page": round(rows_ms, 3),
        "rounds": ROUNDS,
    }
    print(json.dumps(result))
    out = Path(__file__).parent / "results" / "harness_prometheus_parse.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
