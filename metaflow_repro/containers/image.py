"""`repro image build`: a base image for container replays where no image registry is reachable.

The recipe (Debian suite, debootstrap variant and packages, the Python packages added with
``pip install --target``) is hashed into a content key; the image is tagged ``repro-base:<key>``,
so a rebuild with the same recipe is a no-op. The root file system is kept as a tarball under
``REPRO_HOME/images``: a new Docker data root needs only ``docker import`` (seconds), not a new
debootstrap (minutes). The image carries a system ``python3`` (and a ``python`` symlink) for
repro itself and for bootstrap code; a flow's interpreter never comes from it (it is restored
from the store's interpreter snapshot).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.settings import Home, env_setting

REPOSITORY = "repro-base"
SUITE = "bookworm"
# What packages installed for the image must be built for: bookworm's glibc (2.36) on x86_64.
PYTHON_PLATFORM = "x86_64-manylinux_2_36"
DEB_PACKAGES = ("python3", "ca-certificates")
#: what bootstrap code in the image imports with the system Python (S3 access, Metaflow's needs)
PIP_PACKAGES = ("boto3", "requests")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_KEY = "org.repro.recipe"
LABEL_PYTHON = "org.repro.python"


@dataclass(frozen=True)
class Recipe:
    suite: str
    mirror: str
    deb_packages: tuple[str, ...]
    pip_packages: tuple[str, ...]  # exact pins, name==version

    @property
    def key(self) -> str:
        doc = json.dumps(
            {
                "suite": self.suite,
                "mirror": self.mirror,
                "variant": "minbase",
                "deb": sorted(self.deb_packages),
                "pip": sorted(self.pip_packages),
                "python_symlink": True,
                "format": 1,
            },
            sort_keys=True,
        )
        return hashlib.sha256(doc.encode()).hexdigest()[:24]

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}:{self.key}"


def default_recipe() -> Recipe:
    """The recipe with the pip packages pinned to the versions repro itself runs with here."""
    pins = []
    for name in PIP_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise InfraError(f"{name} is not installed with repro; reinstall repro") from None
    return Recipe(SUITE, env_setting("image_mirror"), DEB_PACKAGES, tuple(pins))


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    id: str
    python: str  # the image's system Python, major.minor
    built: bool  # False: the daemon already had it


def client(timeout: int = 600):
    """A Docker client from the environment (DOCKER_HOST); InfraError naming the socket if no daemon answers
    within ``timeout`` seconds (per request)."""
    try:
        import docker
    except ImportError:
        raise InfraError("the `docker` Python package is not installed; reinstall repro") from None
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
    except Exception as exc:  # docker.errors.DockerException, requests' ConnectionError
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise InfraError(
            f"no Docker daemon answers at {where} ({type(exc).__name__}); start dockerd or set DOCKER_HOST"
        ) from None
    return c


def build(home: Home, recipe: Recipe | None = None, log=print, docker_client=None) -> BuiltImage:
    """The image for ``recipe`` in the daemon: found by its tag, imported from the cached root file
    system, or built (debootstrap + pip) and then imported."""
    import docker.errors

    recipe = recipe or default_recipe()
    c = docker_client or client()
    try:
        img = c.images.get(recipe.tag)
        return BuiltImage(recipe.tag, img.id, img.labels.get(LABEL_PYTHON, ""), built=False)
    except docker.errors.ImageNotFound:
        pass
    rootfs = home.image_rootfs(recipe.key)
    meta = rootfs.with_suffix(".json")
    if not (rootfs.is_file() and meta.is_file()):
        _make_rootfs(recipe, rootfs, meta, log)
    python = json.loads(meta.read_text())["python"]
    log(f"importing {rootfs} as {recipe.tag}")
    repository, tag = recipe.tag.split(":")
    c.api.import_image_from_file(
        str(rootfs),
        repository=repository,
        tag=tag,
        changes=[
            f"ENV PATH={SYSTEM_PATH}",
            f"LABEL {LABEL_KEY}={recipe.key}",
            f"LABEL {LABEL_PYTHON}={python}",
            'CMD ["python3"]',
        ],
    )
    img = c.images.get(recipe.tag)
    return BuiltImage(recipe.tag, img.id, python, built=True)


def _make_rootfs(recipe: Recipe, rootfs: Path, meta: Path, log) -> None:
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise BadInput("debootstrap is not installed: `apt-get install debootstrap` (repro image build needs it)")
    if os.geteuid() != 0:
        raise BadInput("repro image build runs debootstrap, which needs root")
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=rootfs.parent, prefix=".build-") as tmp:
        root = Path(tmp) / "root"
        log(f"debootstrap {recipe.suite} (minbase + {', '.join(recipe.deb_packages)}) into {root}")
        _run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(recipe.deb_packages)}",
                recipe.suite,
                str(root),
                recipe.mirror,
            ],
            "debootstrap",
        )
        python = _system_python(root)
        site = root / "usr" / "local" / "lib" / f"python{python}" / "dist-packages"
        log(f"pip install --target {site}: {', '.join(recipe.pip_packages)}")
        _run([*uv_install_into(site, python), *recipe.pip_packages], "pip install --target")
        (root / "usr" / "bin" / "python").symlink_to("python3")
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (root / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        partial = Path(tmp) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], "tar")
        os.replace(partial, rootfs)
        tmp_meta = Path(tmp) / "meta.json"
        tmp_meta.write_text(json.dumps({"python": python, "recipe": recipe.key}))
        os.replace(tmp_meta, meta)


def _system_python(root: Path) -> str:
    """major.minor of the root file system's python3 (Debian: /usr/bin/python3 -> python3.X)."""
    target = os.readlink(root / "usr" / "bin" / "python3")
    name = Path(target).name
    if not name.startswith("python3."):
        raise InfraError(f"unexpected python3 in the image: {target}")
    return name[len("python") :]


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise InfraError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def uv_install_into(target: Path, python: str) -> list[str]:
    """`uv pip install` into the folder ``target`` for the image's Python ``python`` (major.minor) and
    platform, with no uv configuration of the host's; the caller appends what to install."""
    from metaflow_repro.env.uvtool import uv_bin

    return [
        uv_bin(),
        "pip",
        "install",
        "--quiet",
        "--no-config",
        "--target",
        str(target),
        "--python-version",
        python,
        "--python-platform",
        PYTHON_PLATFORM,
    ]
