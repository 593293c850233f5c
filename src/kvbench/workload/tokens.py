"""Seeded token-id and length sampling shared by the workload generators.

Token ids are drawn from [TOKEN_ID_MIN, TOKEN_ID_MAX), a range inside every vocabulary the project
targets (Qwen3 has ~151k ids, the tiny CPU test model 4096... so MAX stays a parameter of the
sampler). Prefix `i` starts with two tokens that encode `i`, so two distinct prefixes never share
their first KV block, whatever the RNG draws.
"""

from __future__ import annotations

import math

import numpy as np

from kvbench.spec.experiment import Distribution

TOKEN_ID_MIN = 100
TOKEN_ID_MAX = 30000
_ID_SPAN = TOKEN_ID_MAX - TOKEN_ID_MIN


def random_token_ids(rng: np.random.Generator, count_tokens: int) -> tuple[int, ...]:
    if count_tokens <= 0:
        return ()
    return tuple(rng.integers(TOKEN_ID_MIN, TOKEN_ID_MAX, size=count_tokens).tolist())


def prefix_token_ids(
    rng: np.random.Generator, prefix_index: int, count_tokens: int
) -> tuple[int, ...]:
    """A prefix whose first two tokens encode `prefix_index` (distinct prefixes differ in block 0)."""
    if count_tokens <= 0:
        return ()
    marker = (
        TOKEN_ID_MIN + prefix_index % _ID_SPAN,
        TOKEN_ID_MIN + (prefix_index // _ID_SPAN) % _ID_SPAN,
    )
    body = random_token_ids(rng, count_tokens)
    return (marker + body[2:])[:count_tokens]


def sample_count(rng: np.random.Generator, spec: int | Distribution) -> int:
    """One token count from an int or a Distribution, clipped to [min, max] and at least 1."""
    if isinstance(spec, int):
        return spec
    value = _draw(rng, spec)
    low = spec.min if spec.min is not None else 1
    high = spec.max if spec.max is not None else math.inf
    return int(max(low, min(high, round(value)), 1))


def _draw(rng: np.random.Generator, dist: Distribution) -> float:
    """A uniform spans [min, max] where both are given (its stdev then unused); otherwise
    mean +- stdev x sqrt(3). Any other kind with stdev 0 is the mean."""
    bounded_uniform = dist.kind == "uniform" and dist.min is not None and dist.max is not None
    if dist.kind == "fixed" or (dist.stdev == 0 and not bounded_uniform):
        return dist.mean
    if dist.kind == "uniform":
        half_width = dist.stdev * math.sqrt(3.0)  # a uniform with this stdev around the mean
        low = dist.min if dist.min is not None else dist.mean - half_width
        high = dist.max if dist.max is not None else dist.mean + half_width
        return float(rng.uniform(low, high))
    if dist.kind == "normal":
        return float(rng.normal(dist.mean, dist.stdev))
    # lognormal with the given mean and stdev of the resulting (not the underlying) distribution
    sigma2 = math.log(1.0 + (dist.stdev / dist.mean) ** 2)
    mu = math.log(dist.mean) - sigma2 / 2.0
    return float(rng.lognormal(mu, math.sqrt(sigma2)))


def mean_count(spec: int | Distribution) -> float:
    """The expected value used for sizing before sampling (mean, clipped to the bounds)."""
    if isinstance(spec, int):
        return float(spec)
    low = spec.min if spec.min is not None else 1
    high = spec.max if spec.max is not None else math.inf
    return float(max(low, min(high, spec.mean)))


def order_indices(rng: np.random.Generator, groups: list[int | None], order: str) -> list[int]:
    """Positions of items (whose prefix groups are `groups`) in the requested reuse order.

    random: a seeded permutation; round_robin: the first item of every group, then the second of
    every group, ... (consecutive items never share a prefix while another group has items left:
    reuse distance maximal); grouped: every item of group 0, then group 1, ... (minimal)."""
    positions = list(range(len(groups)))
    keys = [-1 if g is None else g for g in groups]
    if order == "random":
        return [int(i) for i in rng.permutation(len(groups))]
    if order == "grouped":
        return sorted(positions, key=lambda i: (keys[i], i))
    if order == "round_robin":
        seen: dict[int, int] = {}
        rank = []
        for key in keys:
            rank.append(seen.get(key, 0))
            seen[key] = rank[-1] + 1
        return sorted(positions, key=lambda i: (rank[i], keys[i], i))
    raise ValueError(f"unknown reuse order {order!r}")
