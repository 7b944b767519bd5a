"""Platform names (conda's: ``linux-64``, ``osx-arm64``…) and how PyPI wheels map onto them. Pure."""

from __future__ import annotations

import platform as _platform
import sys
from dataclasses import dataclass

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms, parse_tag

from metaflow_repro.errors import BadInput


@dataclass(frozen=True)
class Platform:
    name: str  # conda's name, used in lock files
    uv: str  # uv's --python-platform
    wheel_platforms: tuple[str, ...]  # most specific first


def _manylinux(arch: str) -> tuple[str, ...]:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(28, 16, -1)]
    if arch in ("x86_64", "i686"):
        tags += [
            "manylinux2014_" + arch,
            "manylinux_2_12_" + arch,
            "manylinux2010_" + arch,
            "manylinux_2_5_" + arch,
            "manylinux1_" + arch,
        ]
    else:
        tags += ["manylinux2014_" + arch]
    return tuple(tags) + (f"linux_{arch}",)


PLATFORMS = {
    p.name: p
    for p in (
        Platform("linux-64", "x86_64-manylinux_2_28", _manylinux("x86_64")),
        Platform("linux-aarch64", "aarch64-manylinux_2_28", _manylinux("aarch64")),
        Platform("osx-64", "x86_64-apple-darwin", tuple(mac_platforms((13, 0), "x86_64"))),
        Platform("osx-arm64", "aarch64-apple-darwin", tuple(mac_platforms((13, 0), "arm64"))),
        Platform("win-64", "x86_64-pc-windows-msvc", ("win_amd64",)),
    )
}


def local_platform_name() -> str:
    machine = _platform.machine().lower()
    if sys.platform.startswith("linux"):
        return "linux-aarch64" if machine in ("aarch64", "arm64") else "linux-64"
    if sys.platform == "darwin":
        return "osx-arm64" if machine == "arm64" else "osx-64"
    if sys.platform == "win32":
        return "win-64"
    raise BadInput(f"unsupported platform {sys.platform}/{machine}")


def get(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise BadInput(f"unknown platform {name!r}; known platforms: {', '.join(sorted(PLATFORMS))}") from None


def supported_tags(plat: Platform, python: str) -> list[Tag]:
    """Wheel tags a CPython ``python`` (e.g. '3.11.7') accepts on ``plat``, best first."""
    version = tuple(int(x) for x in python.split(".")[:2])
    platforms = list(plat.wheel_platforms)
    tags = list(cpython_tags(version, platforms=platforms))
    tags += list(compatible_tags(version, interpreter=f"cp{version[0]}{version[1]}", platforms=platforms))
    return tags


def best_wheel(filenames: list[str], plat: Platform, python: str) -> str | None:
    """The file pip/uv would prefer among ``filenames`` for this platform and Python."""
    rank = {tag: i for i, tag in enumerate(supported_tags(plat, python))}
    best, best_rank = None, None
    for fn in filenames:
        if not fn.endswith(".whl"):
            continue
        tag_part = "-".join(fn[:-4].split("-")[-3:])
        ranks = [rank[t] for t in parse_tag(tag_part) if t in rank]
        if ranks and (best_rank is None or min(ranks) < best_rank):
            best, best_rank = fn, min(ranks)
    return best
