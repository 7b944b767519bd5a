"""What Metaflow would package from the flow's folder, checked before a run starts.

Metaflow's code package is every file under the flow file's folder whose name ends in one of the
package suffixes (``.py,.R,.RDS`` by default), skipping hidden folders. A ``REPRO_HOME`` (thousands
of ``.py`` files in its environments) or another large folder there makes every run walk, hash and
upload it: the run seems to hang before its first task. We walk the folder the way
Metaflow does (its own ``walk`` and ``suffix_filter``), counting names only (no file is read), and
stop with a message naming the folder and where to move it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.errors import BadInput

#: a folder beside the flow is "large" when Metaflow would package more files or bytes from it than this
MAX_PACKAGED_FILES = 2000
MAX_PACKAGED_BYTES = 50 * 1024 * 1024


class LargeFlowFolder(BadInput):
    """Metaflow would package a folder that does not belong in a code package."""


@dataclass(frozen=True)
class Packaged:
    files: int
    size: int

    @property
    def large(self) -> bool:
        return self.files > MAX_PACKAGED_FILES or self.size > MAX_PACKAGED_BYTES


def _suffixes() -> list[str]:
    from metaflow.metaflow_config import DEFAULT_PACKAGE_SUFFIXES

    return [s.strip() for s in DEFAULT_PACKAGE_SUFFIXES.split(",") if s.strip()]


def packaged(folder: Path, suffixes: list[str] | None = None, stop_when_large: bool = True) -> Packaged:
    """How many files (and bytes) under ``folder`` Metaflow's package walk would take."""
    from metaflow.packaging_sys.utils import suffix_filter, walk

    files = size = 0
    for path, _ in walk(str(folder), file_filter=suffix_filter(suffixes or _suffixes())):
        files += 1
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
        if stop_when_large and Packaged(files, size).large:
            break
    return Packaged(files, size)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def check_flow_folder(flow_file: Path, home: Path, suffixes: list[str] | None = None) -> None:
    """Refuse a run whose flow folder holds REPRO_HOME, or a large folder Metaflow would package."""
    flow_dir = Path(flow_file).resolve().parent
    home = Path(home).resolve()
    if home == flow_dir or flow_dir in home.parents:
        rel = home.relative_to(flow_dir)
        if home == flow_dir or not _hidden(rel):
            raise LargeFlowFolder(
                f"{flow_file}: REPRO_HOME ({home}) is inside the flow's folder {flow_dir}, so Metaflow would "
                f"package every environment in it with each run (the run seems to hang after repro's "
                f"'environment(s) reused' line). Move it out of {flow_dir} (e.g. `mv {home} ~/.cache/repro`) and set "
                f"REPRO_HOME to the new place, or unset REPRO_HOME to use ~/.cache/repro."
            )
    try:
        entries = sorted(flow_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        found = packaged(entry, suffixes)
        if found.large:
            raise LargeFlowFolder(
                f"{flow_file}: the folder {entry} beside the flow holds more than {MAX_PACKAGED_FILES} files "
                f"or {MAX_PACKAGED_BYTES // 2**20} MiB that Metaflow would put in every run's code package "
                f"(files ending in {', '.join(suffixes or _suffixes())}), which makes runs start very slowly. "
                f"Move {entry.name} out of {flow_dir} (or rename it to .{entry.name}: Metaflow skips hidden "
                f"folders); if it is REPRO_HOME, set REPRO_HOME to the new place."
            )
