"""The ``repro`` command line, an edge: one module per command parses its arguments, calls an operation
(``metaflow_repro.operations``, the work) and prints; ``main`` maps errors to the exit codes of ``metaflow_repro.errors``
and is the console script's entry point."""

from metaflow_repro.cli.main import main

__all__ = ["main"]
