"""The ``repro`` command line, an edge: one module per command parses its arguments, calls an operation
(``repro.operations``, the work) and prints; ``main`` maps errors to the exit codes of ``repro.errors``
and is the console script's entry point."""

from repro.cli.main import main

__all__ = ["main"]
