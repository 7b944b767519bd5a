"""Built-in artifact comparators.

Each module here runs *inside a step's environment* (Python 3.7+, the step's own libraries), is
loaded by file path, and defines ``compare(a, b, options)`` returning ``None`` (not mine) or
``("equivalent" | "different", "short description")``. Options: ``rel_tol``, ``abs_tol``.
They are offered through the ``repro_artifact_comparators`` pluggy hook (see ``metaflow_repro.hooks``).
"""

from pathlib import Path

HERE = Path(__file__).parent
BUILTIN = [str(HERE / f"{name}.py") for name in ("pandas_objects", "numpy_arrays", "numbers", "fallback")]
