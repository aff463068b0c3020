"""The engine's error base for user mistakes."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in user input; the CLI prints its message, no traceback."""
