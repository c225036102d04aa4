"""``python -m stackha`` runs the CLI."""

from stackha.cli import main

main()
