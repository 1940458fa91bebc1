"""The `ledger` command (thin): subcommands arrive with their issues."""

import typer

cli = typer.Typer(help="Credits ledger: an event-sourced, double-entry ledger service.")


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo("credits-ledger 0.1.0")


def main() -> None:
    cli()
