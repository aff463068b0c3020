"""gengraph: declarative, graph-based reverse-mode autodiff with plugin models."""

__version__ = "0.1.0"
