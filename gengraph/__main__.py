"""`python -m gengraph` runs the command-line interface."""

from gengraph.cli.main import main

main(prog_name="gengraph")
