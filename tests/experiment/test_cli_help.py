"""Every option of the commands a user reads describes itself and states its default."""

import pytest
import typer

from kvbench.cli import app

COMMANDS = ["quickstart", "run", "report", "spec"]


def _command(name: str):
    group = typer.main.get_command(app)
    return group.commands[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_and_a_default(name):
    command = _command(name)
    assert command.help, name
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        text = param.help or ""
        assert text, f"{name} {param.opts}: no help"
        shows_default = getattr(param, "show_default", False) and param.default not in (None, [])
        assert param.required or "[default" in text or shows_default, f"{name} {param.opts}"


def test_run_help_lists_no_report_and_dry_run_duration(capsys):
    from kvbench.cli import main

    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--no-report" in out and "estimated duration" in out
