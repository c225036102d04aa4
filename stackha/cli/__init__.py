"""The ``stackha`` command line: a thin layer over model, engine, hosts and verify.

Every verb that prints a table also takes ``--format json``.  User errors
(:class:`stackha.errors.UserError`) print one line ``error: …`` and exit non-zero; they never show
a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from stackha.errors import UserError

app = typer.Typer(
    name="stackha",
    help="Make an OpenStack control plane highly available, and prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


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
    try:
        from stackha.cli import analyze as analyze_cli
    except ImportError:  # the analysis verb lands with the bundle model
        pass
    else:
        analyze_cli.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.  Returns (and exits with) the process exit code."""
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except UserError as exc:
        from rich.text import Text

        err_console.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # usage errors (typer vendors click: duck-type its ClickException)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    return 0
