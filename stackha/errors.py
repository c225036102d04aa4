"""Errors that reach the user as one clear line (never a traceback), and the exit codes.

The errors form one tree; the CLI (:func:`stackha.cli.main`) prints ``error: <message>`` and
exits with the error's ``exit_code``:

- :class:`UserError` (exit 1): a refused or failed operation the user can act on — a deploy that
  left a unit in error, a lab that does not exist, a component that failed on a unit (those
  errors name the unit: ``galera/1: …``).
- :class:`InvalidInput` (exit 2): input stackha cannot accept — a bundle, an option, a flag.
  :class:`stackha.model.BundleError` is one.
- :class:`InternalError` (exit 70): a bug in stackha.  Any other exception that reaches the CLI is
  reported the same way: one line naming the exception and where it was raised, and how to
  report it; the traceback is shown only with ``STACKHA_DEBUG=1``.

Exit codes of every ``stackha`` command (the same table is in the README):

==== =======================================================================================
code meaning
==== =======================================================================================
0    clean: done, nothing to report
1    findings (analyze: an error or warning; verify: a lost operation or a failed run, and
     with ``--strict`` a missed target) or an operation that did not succeed for a reason the
     message gives (:class:`UserError`)
2    refused input (:class:`InvalidInput`, command-line usage errors); nothing was changed
70   internal error: a bug in stackha (``EX_SOFTWARE`` of BSD's sysexits.h)
130  interrupted (Ctrl-C)
==== =======================================================================================

``stackha lab exec HOST -- CMD`` exits with CMD's exit code, as ``ssh`` does.
"""

from __future__ import annotations

import re

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_INTERNAL",
    "EXIT_INVALID",
    "EXIT_OK",
    "InternalError",
    "InvalidInput",
    "UserError",
    "printable",
]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INVALID = 2
EXIT_INTERNAL = 70


class UserError(Exception):
    """A problem the user can fix; ``exit_code`` is what the CLI exits with (default 1)."""

    exit_code = EXIT_FINDINGS


class InvalidInput(UserError):
    """Input that cannot be accepted (a bundle, a name, an option): exit code 2."""

    exit_code = EXIT_INVALID


class InternalError(Exception):
    """A bug in stackha (a state that valid code never reaches): exit code 70.

    Not a :class:`UserError`: the user cannot fix it, only report it.
    """

    exit_code = EXIT_INTERNAL


# C0 and C1 control characters, DEL, line/paragraph separators and the bidirectional overrides.
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL_RE = re.compile(f"[{_CONTROL}]")
_CONTROL_NL_RE = re.compile(f"[{_CONTROL}\n\t]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str, limit: int | None = None, *, newlines: bool = True) -> str:
    """``text`` safe to print on a terminal: control characters (NUL, ESC, …) as ``\\xNN``.

    Keeps newlines and tabs unless ``newlines`` is False (then they are escaped too, so the text
    is one line).  With ``limit``, text longer than ``limit`` characters is cut and ends with
    ``… (N more characters)``.  An error message quoting a bundle must never send an escape
    sequence to the user's terminal.
    """
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more characters)"
    return (_CONTROL_RE if newlines else _CONTROL_NL_RE).sub(_escape, text)
