"""Hypothesis strategies shared by the fuzz tests: hostile JSON-like values and tree mutations.

A mutation takes a valid document (a spec, a GuideLLM result) and changes it at one random place:
a value replaced by a hostile one, a key deleted, or an unknown key added. This reaches deep into
the structure, where purely random documents would be rejected at the top level.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import strategies as st

HOSTILE_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        -5,
        1,
        7,
        2**31,
        2**63,
        2**64 - 1,
        10**12,
        10**30,
        1e9,
        1e30,
        -1e30,
        0.5,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
        1e-300,
    ]
)
HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "a\x00b",
        "../../escaped",
        "/abs/path",
        "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        "é" * 3,
        "x" * 5000,
        "${unknown}",
        "null",
        "1e9",
        "true",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    HOSTILE_NUMBERS,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys / indexes) into a JSON-like tree, the root included."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node[:3]):  # a few items of long lists are enough
            paths += _paths(child, (*prefix, index))
    return paths


def _parent(root: Any, path: tuple) -> Any:
    node = root
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated(draw, document: Any, max_mutations: int = 3) -> Any:
    """`document` with 1..max_mutations random changes (never the root replaced)."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        action = draw(st.sampled_from(["replace", "replace", "delete", "add_key"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
    return doc
