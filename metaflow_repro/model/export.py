"""Export lock sections to the ecosystem's own formats (PEP 751 ``pylock.toml``)."""

from __future__ import annotations

import tomli_w

from metaflow_repro.model.lock import Package, PlatformLock

_MARKERS = {
    "linux-64": "sys_platform == 'linux' and platform_machine == 'x86_64'",
    "linux-aarch64": "sys_platform == 'linux' and platform_machine == 'aarch64'",
    "osx-64": "sys_platform == 'darwin' and platform_machine == 'x86_64'",
    "osx-arm64": "sys_platform == 'darwin' and platform_machine == 'arm64'",
    "win-64": "sys_platform == 'win32' and platform_machine == 'AMD64'",
}


def _package(p: Package) -> dict[str, object]:
    """A wheel built from an sdist is exported as that sdist (an installer builds it itself; the
    wheel repro built is not on any index)."""
    if p.built is not None:
        s = p.built.sdist
        return {
            "name": p.name,
            "version": p.version,
            "sdist": {"name": s.file, "url": s.url, "size": s.size, "hashes": {"sha256": s.sha256}},
        }
    wheel = {"name": p.file, "url": p.url, "size": p.size, "hashes": {"sha256": p.sha256}}
    return {"name": p.name, "version": p.version, "wheels": [wheel]}


def to_pylock(pl: PlatformLock, flow: str, step: str) -> str:
    """A PEP 751 lock (one environment) for one step on one platform."""
    doc = {
        "lock-version": "1.0",
        "created-by": "repro",
        "requires-python": f"=={pl.python}",
        "environments": [_MARKERS[pl.platform]] if pl.platform in _MARKERS else [],
        "packages": [_package(p) for p in sorted(pl.packages)],
        "tool": {"repro": {"flow": flow, "step": step, "env-id": pl.env_id, "platform": pl.platform}},
    }
    return tomli_w.dumps(doc)
