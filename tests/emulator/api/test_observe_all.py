"""observe_all gives a histogram exactly the samples one observe per value gives (same float sum,
same bucket counts), including values on bucket bounds, NaN, infinities and negatives."""

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from kvbench.emulator.api.metrics import observe_all

BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.5, 1.0]


def samples(registry: CollectorRegistry) -> list[tuple]:
    return [
        (s.name, tuple(sorted(s.labels.items())), repr(s.value))
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def observed(values: list[list[float]], fast: bool) -> list[tuple]:
    registry = CollectorRegistry()
    child = Histogram("h", "doc", ["engine"], buckets=BUCKETS, registry=registry).labels("0")
    for batch in values:
        if fast:
            observe_all(child, batch)
        else:
            for value in batch:
                child.observe(value)
    return samples(registry)


def test_observe_all_equals_observe_one_by_one():
    rng = random.Random(3)
    for _ in range(50):
        batches = [
            [
                rng.choice(
                    [rng.random() * 0.2, rng.random(), rng.choice(BUCKETS), -rng.random(), 1e9]
                )
                for _ in range(rng.randrange(0, 40))
            ]
            for _ in range(rng.randrange(1, 6))
        ]
        assert observed(batches, fast=True) == observed(batches, fast=False)


def test_observe_all_nan_and_infinity_as_observe():
    batches = [[0.1, math.nan, math.inf, 0.05, -math.inf]]
    fast, slow = observed(batches, fast=True), observed(batches, fast=False)
    assert fast == slow
    assert ("h_count", (("engine", "0"),), "4.0") in fast  # NaN lands in no bucket
