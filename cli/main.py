"""The `gengraph` click group. Subcommands import their heavy modules lazily."""

import click

from gengraph import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gengraph")
def main():
    """gengraph: declare a model in TOML, differentiate its graph, run it."""


if __name__ == "__main__":
    main()
