"""`kvbench emulate serve|router|stack --help`: every option has a help line that states its
default (or that it is required)."""

from __future__ import annotations

import re

import pytest

from kvbench.cli import main

_OPTION = re.compile(r"^\s{2}(-{1,2}[\w-]+)")


def _option_blocks(text: str) -> dict[str, str]:
    """option flag -> its help text (argparse layout: flag at 2 spaces, help continues)."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = _OPTION.match(line)
        if match:
            current = match.group(1)
            blocks[current] = line
        elif current and line.startswith(" " * 10):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize("command", ["serve", "router"])
def test_every_option_has_help_with_its_default(command, capsys):
    assert main(["emulate", command, "--help"]) == 0
    blocks = _option_blocks(capsys.readouterr().out)
    flags = {flag for flag in blocks if flag not in ("-h", "--help")}
    assert len(flags) >= (20 if command == "serve" else 8)
    missing = [f for f in flags if "(default" not in blocks[f] and "(required)" not in blocks[f]]
    assert missing == []


def test_serve_help_says_the_default_hardware(capsys):
    assert main(["emulate", "serve", "--help"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "--hardware HARDWARE emulated GPU profile (default: H100-SXM)" in flat


def test_stack_help_states_its_defaults(capsys):
    assert main(["emulate", "stack", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--scenario" in out and "default: the spec's first" in out
