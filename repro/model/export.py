"""Export lock sections to the ecosystem's own formats (PEP 751 ``pylock.toml``)."""

from __future__ import annotations

import tomli_w

from repro.model.lock import PlatformLock

_MARKERS = {
    "linux-64": "sys_platform == 'linux' and platform_machine == 'x86_64'",
    "linux-aarch64": "sys_platform == 'linux' and platform_machine == 'aarch64'",
    "osx-64": "sys_platform == 'darwin' and platform_machine == 'x86_64'",
    "osx-arm64": "sys_platform == 'darwin' and platform_machine == 'arm64'",
    "win-64": "sys_platform == 'win32' and platform_machine == 'AMD64'",
}


def to_pylock(pl: PlatformLock, flow: str, step: str) -> str:
    """A PEP 751 lock (one environment) for one step on one platform."""
    doc = {
        "lock-version": "1.0",
        "created-by": "repro",
        "requires-python": f"=={pl.python}",
        "environments": [_MARKERS[pl.platform]] if pl.platform in _MARKERS else [],
        "packages": [
            {
                "name": p.name,
                "version": p.version,
                "wheels": [{"name": p.file, "url": p.url, "size": p.size, "hashes": {"sha256": p.sha256}}],
            }
            for p in sorted(pl.packages)
        ],
        "tool": {"repro": {"flow": flow, "step": step, "env-id": pl.env_id, "platform": pl.platform}},
    }
    return tomli_w.dumps(doc)
