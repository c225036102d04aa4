"""The ``stackha`` command line: a thin layer over model, engine, hosts and verify.

Every verb that prints a table also takes ``--format json``.  User errors
(:class:`stackha.errors.UserError`) print one line ``error: …`` and exit non-zero; they never show
a traceback.  Exit codes are those of :mod:`stackha.errors` for every verb: 0 clean, 1 findings
or a failed operation, 2 refused input, 70 an internal error (one line; ``STACKHA_DEBUG=1`` adds
the traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from rich.text import Text

from stackha.errors import EXIT_INTERNAL, UserError, printable

app = typer.Typer(
    name="stackha",
    help="Make an OpenStack control plane highly available, and prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
# typer vendors click; its usage errors derive from click's ClickException (public: BadParameter's base)
_CLICK_EXCEPTION: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _Settings:
    state_dir: Path | None = None


settings = _Settings()


@app.callback()
def _root(
    state_dir: Path = typer.Option(
        None, "--state-dir", envvar="STACKHA_STATE_DIR",
        help="Where labs and deployments are recorded [default: /var/lib/stackha].",
    ),
) -> None:
    settings.state_dir = state_dir


def state_dir() -> Path:
    """The state directory chosen by --state-dir / $STACKHA_STATE_DIR / the default."""
    from stackha.hosts.provider import default_state_dir

    return settings.state_dir or default_state_dir()


def _register() -> None:
    from stackha.cli import lab as lab_cli

    from stackha.cli import deploy as deploy_cli

    app.add_typer(lab_cli.app, name="lab")
    deploy_cli.register(app)
    from stackha.cli import demo as demo_cli

    demo_cli.register(app)
    from stackha.cli import verify as verify_cli

    verify_cli.register(app)
    from stackha.cli import tempest as tempest_cli

    tempest_cli.register(app)
    from stackha.cli import instanceha as instanceha_cli

    instanceha_cli.register(app)
    try:
        from stackha.cli import analyze as analyze_cli
    except ImportError:  # the analysis verb lands with the bundle model
        pass
    else:
        analyze_cli.register(app)


_register()


def _internal_error(exc: BaseException) -> int:
    """Report an exception no layer handled: one line, exit :data:`EXIT_INTERNAL` (70)."""
    import os
    import traceback

    where = ""
    marker = f"{os.sep}stackha{os.sep}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if marker in f.filename]  # the innermost frame of stackha's own code
    if frames:
        f = (ours or frames)[-1]
        name = f.filename
        if marker in name:
            name = "stackha" + os.sep + name.rsplit(marker, 1)[1]
        where = f" at {name}:{f.lineno} ({f.name})"
    what = printable(str(exc), limit=200).replace("\n", " ")
    if os.environ.get("STACKHA_DEBUG") == "1":
        traceback.print_exception(exc, file=sys.stderr)
    err_console.print(
        Text(f"internal error: {type(exc).__name__}: {what}{where} — this is a bug in stackha, not "
             "in your input; please report it with the command line and the output of the same "
             "command run with STACKHA_DEBUG=1 (which adds the traceback)"),
        highlight=False, soft_wrap=True)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.  Returns (and exits with) the process exit code.

    Exit codes (the table of :mod:`stackha.errors`): 0 clean, 1 findings or a failed operation
    (:class:`UserError`), 2 refused input (:class:`InvalidInput`, usage errors), 70 an internal
    error (any other exception: one line, the traceback only with ``STACKHA_DEBUG=1``), 130
    interrupted.
    """
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except UserError as exc:
        err_console.print(Text("error: ", style="bold red") + Text(printable(str(exc))),
                          highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except _CLICK_EXCEPTION as exc:  # usage errors: exit 2 with click's message
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        sys.exit(_internal_error(exc))
    return 0
