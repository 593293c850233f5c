"""Errors that reach the user.

Contract: a `UserError` is a mistake in the user's input (spec field, CLI flag, file). The CLI prints
its message as one line and exits with code 2, never a traceback. The message must name the field,
flag or file at fault.
"""


class UserError(Exception):
    """Bad input from the user; `str(err)` is the one-line message shown to them."""

    exit_code = 2


class RunFailed(Exception):
    """A run finished but some cells failed (CLI exit code 1)."""

    exit_code = 1
