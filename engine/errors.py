"""The engine's error base for user mistakes."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in user input; the CLI prints its message, no traceback."""


class GraphTooLarge(UserError, ValueError):
    """A graph grew past Graph.MAX_NODES while it was built: a count in the model (layers, blocks,
    unrolled sampling steps) is far too large. Raised before memory runs out."""


class LabelError(UserError, IndexError):
    """A class label outside 0..C-1 fed to a classification op (cross-entropy, accuracy). NumPy's
    indexing would read a negative label from the row's end, silently; PyTorch refuses it too."""
