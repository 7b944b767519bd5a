"""Synthetic runs for store tests: real package-cache files, a real code package (tar.gz with a flow
file) and a real RunRecord, made in a private REPRO_HOME without running Metaflow. They exercise
push, pull, verify and gc exactly as a real run's snapshot would (those only see bytes and hashes)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.fetch import add_file
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.record import RunRecord, StepRecord
from metaflow_repro.settings import Settings, load_settings
from metaflow_repro.store import LocalStore

FLOW_SOURCE = b"from metaflow import FlowSpec\n"


def settings_for(home: Path) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    return load_settings(home, environ={"REPRO_HOME": str(home)})


def code_package(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class FakeRun:
    record: RunRecord
    settings: Settings
    packages: list[Package]

    @property
    def code_file(self) -> Path:
        return self.settings.home.code_package(self.record.code_sha256)


def fake_run(
    home: Path,
    run_id: str = "1",
    n_packages: int = 5,
    seed: str = "",
    flow: str = "FakeFlow",
    parameters: dict | None = None,
    code: dict[str, bytes] | None = None,
    flow_file: str = "flow.py",
    first_size: int = 0,
) -> FakeRun:
    """A run of ``flow`` whose environment has ``n_packages`` package files (contents from ``seed``:
    same seed, same files, so runs can share objects)."""
    settings = settings_for(home)
    cache = PackageCache(settings.home.packages)
    packages = []
    for i in range(n_packages):
        data = f"package {i} of {seed or run_id}\n".encode() * 50
        if i == 0 and first_size:  # e.g. above boto3's multipart threshold (8 MB)
            data = (data * (first_size // len(data) + 1))[:first_size]
        sha = hashlib.sha256(data).hexdigest()
        pkg = Package(
            name=f"pkg{i}",
            version="1.0",
            source="pypi",
            file=f"pkg{i}-1.0-py3-none-any.whl",
            url=f"https://example.invalid/pkg{i}.whl",
            sha256=sha,
            size=len(data),
        )
        src = home / "src" / pkg.file
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        add_file(cache, pkg, src)
        packages.append(pkg)
    pl = PlatformLock(platform="linux-64", python="3.11.7", packages=tuple(packages))
    tar = code_package(code if code is not None else {"flow.py": FLOW_SOURCE + seed.encode()})
    code_sha = hashlib.sha256(tar).hexdigest()
    target = settings.home.code_package(code_sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(tar)
    record = RunRecord(
        flow=flow,
        run_id=run_id,
        flow_file=flow_file,
        code_sha256=code_sha,
        lock_sha256="0" * 64,
        parameters=parameters or {},
        pythonhashseed="0",
        metaflow_version="2.19",
        repro_version="test",
        host={},
        datastore={},
        steps={"start": StepRecord(spec_id="a" * 64, env_id=pl.env_id, disabled=False)},
        envs={pl.env_id: pl},
        created_at=f"2026-01-01T00:00:{int(run_id) % 60:02d}+00:00" if run_id.isdigit() else "",
    )
    return FakeRun(record, settings, packages)


def age(path: Path, seconds: float = 7200) -> None:
    """Make a file look ``seconds`` old (past gc's grace period)."""
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def aged_store(folder: Path, *keys: str) -> LocalStore:
    """A folder store holding ``keys`` (one byte each), old enough for gc's grace period."""
    for key in keys:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        age(path)
    return LocalStore(str(folder))
