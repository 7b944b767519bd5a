"""Settings: environment variables over ``[tool.repro]`` in the nearest ``pyproject.toml``.

Pure apart from reading the environment and one small file; nothing here touches the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from repro._toml import tomllib
from repro.errors import BadInput

CONDA_SOURCES = ("pypi", "channel")


@dataclass(frozen=True)
class Settings:
    home: Path
    store: str
    conda_source: str | None = None
    platforms: tuple[str, ...] = ()
    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    config_file: Path | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def package_cache(self) -> Path:
        return self.home / "packages"

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"

    @property
    def uv_cache(self) -> Path:
        return self.home / "uv-cache"


def find_pyproject(start: Path) -> Path | None:
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else [start.parent, *start.parent.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _tool_repro(pyproject: Path) -> dict:
    try:
        with pyproject.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{pyproject}: cannot read [tool.repro]: {exc}") from exc
    table = data.get("tool", {}).get("repro", {})
    if not isinstance(table, dict):
        raise BadInput(f"{pyproject}: [tool.repro] must be a table")
    return table


def _as_list(value, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.replace(",", " ").split() if v)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise BadInput(f"{where}: {key} must be a string or a list of strings, got {value!r}")


def load_settings(start: Path | None = None, environ: dict | None = None) -> Settings:
    """Settings for work on the flow at (or folder) ``start``; defaults to the current folder."""
    env = os.environ if environ is None else environ
    pyproject = find_pyproject(Path(start) if start else Path.cwd())
    table = _tool_repro(pyproject) if pyproject else {}
    where = str(pyproject) if pyproject else "environment"

    home = Path(env.get("REPRO_HOME") or table.get("home") or Path.home() / ".cache" / "repro")
    home = home.expanduser().resolve()
    store = env.get("REPRO_STORE") or table.get("store") or (home / "store").as_uri()

    conda_source = env.get("REPRO_CONDA_SOURCE") or table.get("conda-source")
    if conda_source is not None and conda_source not in CONDA_SOURCES:
        raise BadInput(
            f"{where}: conda-source must be one of {', '.join(CONDA_SOURCES)}, got {conda_source!r}"
        )
    platforms = _as_list(env.get("REPRO_PLATFORMS") or table.get("platforms"), "platforms", where)
    find_links = _as_list(env.get("REPRO_FIND_LINKS") or table.get("find-links"), "find-links", where)
    return Settings(
        home=home,
        store=str(store),
        conda_source=conda_source,
        platforms=platforms,
        index_url=env.get("REPRO_INDEX_URL") or table.get("index-url"),
        find_links=find_links,
        config_file=pyproject,
        raw=table,
    )
