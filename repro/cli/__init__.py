"""The ``repro`` command line, an edge: parse arguments, call an operation, print, and map errors to the
exit codes of ``repro.errors``. ``main`` is the console script's entry point."""

from repro.cli.main import main

__all__ = ["main"]
