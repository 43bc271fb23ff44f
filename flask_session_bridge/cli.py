"""The ``flask bridge-cleanup`` command."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .exceptions import StoreUnavailable


@click.command("bridge-cleanup")
@with_appcontext
def cleanup_command() -> None:
    """Remove expired sessions from the store and print how many."""
    bridge = current_app.extensions["session_bridge"]
    try:
        count = bridge.cleanup()
    except StoreUnavailable as e:
        raise click.ClickException(f"The session store is unavailable: {e}") from e
    click.echo(f"Removed {count} expired session{'' if count == 1 else 's'}.")
