"""The ``repro`` command line: one module per command (its arguments and what it prints) over
``repro.operations`` (the work). ``main`` is the console entry point."""

from repro.cli.main import main

__all__ = ["main"]
