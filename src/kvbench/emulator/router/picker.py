"""Score combination and picking, as GIE v1.2 runs a scheduling profile.

Contract:
- total[endpoint] = sum over scorers of weight x clamp(score, 0, 1); not divided by the sum of the
  weights (scheduler_profile.go runScorerPlugins). A scorer that gave an endpoint no score counts 0.
- max-score-picker: shuffle the candidates with the injected RNG, stable-sort by total descending,
  keep the first `max_num_of_endpoints` (default 1). Ties are thus broken at random, reproducibly
  for a seeded RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def weighted_totals(
    scores_by_scorer: dict[str, dict[str, float]], weights: dict[str, float], addresses: list[str]
) -> dict[str, float]:
    totals = {address: 0.0 for address in addresses}
    for scorer_name, scores in scores_by_scorer.items():
        weight = weights[scorer_name]
        get = scores.get
        for address in addresses:
            totals[address] += weight * clamp01(get(address, 0.0))
    return totals


@dataclass
class MaxScorePicker:
    name: str = "max-score-picker"
    max_num_of_endpoints: int = 1
    type: str = "max-score-picker"

    def pick(self, totals: dict[str, float], rng: random.Random) -> list[str]:
        candidates = list(totals)
        rng.shuffle(candidates)
        candidates.sort(key=lambda address: totals[address], reverse=True)  # stable
        return candidates[: self.max_num_of_endpoints]
