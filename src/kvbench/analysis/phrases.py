"""Sentences about a change, worded from its sign: "lowers TTFT mean by 44.7 %", never "lowers by
-44.7 %" (a double negative) nor "raises by -3 %". The signed delta with its interval follows in
parentheses, exactly as the tables print it, so a reader can match sentence and table.
"""

from __future__ import annotations

import math

from kvbench.analysis.stats import Delta


def change_phrase(delta: Delta, metric: str, up: str = "raises", down: str = "lowers") -> str:
    """'<up|down> <metric> by <|delta|> % (<signed delta> [interval])'; 'leaves <metric> unchanged'
    for an exact zero; 'changes <metric> by n/a' when there is no estimate."""
    if math.isnan(delta.delta_pct):
        return f"has no estimate for {metric}"
    if delta.delta_pct == 0:
        return f"leaves {metric} unchanged ({delta.text()})"
    verb = up if delta.delta_pct > 0 else down
    return f"{verb} {metric} by {abs(delta.delta_pct):.1f} % ({delta.text()})"


def count_phrase(count: int, singular: str, plural: str | None = None) -> str:
    """'1 repeat', '3 repeats', '0 cells': the noun agrees with the count."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def join_names(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
