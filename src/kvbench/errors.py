"""Errors that reach the user.

Contract: a `UserError` is a mistake in the user's input (spec field, CLI flag, file). The CLI prints
its message as one line and exits with code 2, never a traceback. The message must name the field,
flag or file at fault. An `EnvironmentFailure` (exit 1) is a fault of the machine, not the input.
"""


class UserError(Exception):
    """Bad input from the user; `str(err)` is the one-line message shown to them."""

    exit_code = 2


class EnvironmentFailure(Exception):
    """The environment, not the input, stopped kvbench: an unwritable or full output directory, an
    unreachable API server. One line, exit code 1; what was written so far stays valid, and
    `kvbench run ... --resume` finishes the run once the environment is fixed."""

    exit_code = 1


def one_line(message: str) -> str:
    """The message as printed: control characters (a newline in a user's value) shown escaped, so a
    message is always exactly one line whatever the input held."""
    if message.isprintable():
        return message
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
