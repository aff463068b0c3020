"""gengraph's command-line interface (click)."""
