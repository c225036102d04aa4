"""``stackha lab …``: the embedded lab provider's verbs."""

import typer

app = typer.Typer(help="The lab: machines as Linux namespaces on one computer.", no_args_is_help=True)
