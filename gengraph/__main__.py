"""`python -m gengraph` runs the command-line interface."""

from gengraph.cli.entry import main

main(prog_name="gengraph")
