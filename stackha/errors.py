"""Errors that reach the user as one clear line (never a traceback).

Raise :class:`UserError` (or a subclass) for bad input or a refused operation: the CLI prints
``error: <message>`` and exits with ``exit_code`` (2 for invalid input, 1 otherwise).
"""


class UserError(Exception):
    """A problem the user can fix; ``exit_code`` is what the CLI exits with (default 1)."""

    exit_code = 1


class InvalidInput(UserError):
    """Input that cannot be accepted (a bundle, a name, an option): exit code 2."""

    exit_code = 2
