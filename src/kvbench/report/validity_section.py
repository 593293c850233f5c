"""The validity section: the A/A twin check first, then every FLAG with its evidence, then one line
per check saying what it covered (cells, models or the run) and how each came out.

Wording contract: "No check flagged a problem." only when no check at all (A/A included) flagged;
a run-level check is stated with its evidence, never as a count that reads like a cell count.
"""

from __future__ import annotations

from collections import Counter

from kvbench.analysis.twins import CHECK_NAME as AA_CHECK
from kvbench.analysis.validity import Check, CheckStatus
from kvbench.report.data import ReportData
from kvbench.report.tables import md_table

FLAG_ROWS_PER_CHECK = (
    3  # beyond this, one summary row per check; every row is in validity_checks.csv
)
STATUS_WORD = {CheckStatus.FLAG: "FLAG", CheckStatus.OK: "ok", CheckStatus.SKIP: "skipped"}


def validity_section(data: ReportData) -> list[str]:
    checks = data.checks
    cell_ids = {c.cell_id for c in data.run.cells}
    lines = ["## Validity checks", ""] + aa_lines(checks)
    lines += [
        "",
        "Could this run show a difference at all? A FLAG qualifies every number it touches.",
    ]
    flags = [c for c in checks if c.status == CheckStatus.FLAG and c.name != AA_CHECK]
    aa_flagged = any(c.status == CheckStatus.FLAG and c.name == AA_CHECK for c in checks)
    if flags:
        lines += [""] + md_table(["check", "subject", "evidence"], flag_rows(flags))
    elif aa_flagged:
        lines += ["", "No check other than the A/A twin check flagged a problem."]
    else:
        lines += ["", "No check flagged a problem."]
    lines += ["", "Every check (the A/A twin check is stated above):"]
    for name in dict.fromkeys(c.name for c in checks if c.name != AA_CHECK):
        lines.append(f"- {check_summary([c for c in checks if c.name == name], cell_ids)}")
    return lines


def check_summary(checks: list[Check], cell_ids: set[str]) -> str:
    """'client keeps up: 7 cells checked: 1 FLAG, 6 ok' or, for one run-level subject,
    'cells completed (run): ok: all 7 cells ok'."""
    name = checks[0].name
    if len(checks) == 1 and checks[0].subject not in cell_ids:
        only = checks[0]
        return f"{name} ({only.subject}): {STATUS_WORD[only.status]}: {only.evidence}"
    counts = Counter(STATUS_WORD[c.status] for c in checks)
    kind = "cells" if all(c.subject in cell_ids for c in checks) else "subjects"
    parts = ", ".join(f"{counts[w]} {w}" for w in ("FLAG", "ok", "skipped") if counts[w])
    text = f"{name}: {len(checks)} {kind} checked: {parts}"
    skipped = [c for c in checks if c.status == CheckStatus.SKIP]
    if skipped:
        text += f' (skipped where data was absent, e.g. "{skipped[0].evidence}")'
    return text


def flag_rows(flags: list[Check]) -> list[list[str]]:
    """The first flags of each check in full, then one row counting the rest, so a large matrix
    (the seed evaluation has 224 cells) keeps its validity section readable."""
    rows, shown = [], Counter[str]()
    for check in flags:
        shown[check.name] += 1
        if shown[check.name] <= FLAG_ROWS_PER_CHECK:
            rows.append([f"**FLAG** {check.name}", check.subject, check.evidence])
    for name, count in shown.items():
        if count > FLAG_ROWS_PER_CHECK:
            rest = count - FLAG_ROWS_PER_CHECK
            rows.append(
                [
                    f"**FLAG** {name}",
                    f"{rest} more",
                    f"the same check flagged {rest} more subjects: see `validity_checks.csv`",
                ]
            )
    return rows


def aa_lines(checks: list[Check]) -> list[str]:
    """The A/A twin check first: it says whether the intervals below can be trusted at all."""
    lines = []
    for c in (c for c in checks if c.name == AA_CHECK):
        mark = {CheckStatus.FLAG: "**FLAG**", CheckStatus.OK: "ok", CheckStatus.SKIP: "skipped"}[
            c.status
        ]
        subject = "" if c.subject == "run" else f" ({c.subject.split('/')[-1]})"
        lines.append(f"- **A/A twin check**{subject}: {mark}: {c.evidence}.")
    return lines
