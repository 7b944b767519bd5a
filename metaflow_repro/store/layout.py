"""Every object key of a store, built and parsed here and nowhere else. Pure.

Each kind of key is spelled once, as a template (``_TEMPLATES``): the builders fill it in, ``parse``
matches a key back against the same templates, so what one writes the other reads, and a key of no
known shape (junk, a hand-made object, a key a manifest from the store names) is refused rather than
guessed at. The two keys a Batch job itself spells (its bootstrap script and manifest) are spelled in
``protocol``, the one module both sides read, and their templates here are made from those.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.errors import BadInput
from metaflow_repro.model.validate import FILE_NAME, PLAIN_NAME

#: a run id, as records have them (never '.' or '..': it is a folder)
_RUN_ID = PLAIN_NAME
#: a flow's folder under runs/: its class name (records of version 1) or its identity key
FLOW_DIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(@[A-Za-z0-9_.~@\-]+)?$")


class Kind(enum.Enum):
    """What a store object is, by its key."""

    RECORD = "record"
    LATEST = "latest"
    PACKAGE = "package"
    LOCK = "lock"
    CODE = "code"
    ARTIFACT = "artifact"
    INPUT_BLOB = "input blob"
    INPUT_ARTIFACT = "input artifact"
    PYTHON_SNAPSHOT = "python snapshot"
    PYTHON_MANIFEST = "python manifest"
    PYTHON_SNAPSHOT_ZSTD = "python snapshot (zstd)"
    IMAGE = "image"
    IMAGE_MANIFEST = "image manifest"
    BYTECODE = "bytecode"
    UV = "uv"
    BOOTSTRAP_SCRIPT = "bootstrap script"
    BOOTSTRAP_MANIFEST = "bootstrap manifest"
    LEASE = "lease"
    SWEEP = "sweep"
    MARKER = "store marker"
    AUDIT = "audit"
    BISECT_ANSWER = "bisect answer"


# Fields a template may hold: {digest} (the content hash, env id or lease id), {shard} (its first two
# digits, one folder level so that no folder holds every object), {name} (a package's file name),
# {flow} (a folder under runs/) and {run_id}.
_TEMPLATES: dict[Kind, str] = {
    Kind.RECORD: "runs/{flow}/{run_id}/record.json",
    Kind.LATEST: "runs/{flow}/latest",
    Kind.PACKAGE: "packages/sha256/{shard}/{digest}/{name}",
    Kind.LOCK: "locks/{digest}.toml",
    Kind.CODE: "code/{digest}.tar.gz",
    Kind.ARTIFACT: "artifacts/sha1/{shard}/{digest}",
    Kind.INPUT_BLOB: "inputs/sha256/{shard}/{digest}",
    Kind.INPUT_ARTIFACT: "inputs/sha1/{shard}/{digest}",
    Kind.PYTHON_SNAPSHOT: "pythons/{digest}.tar.gz",
    Kind.PYTHON_MANIFEST: "pythons/{digest}.json",
    Kind.PYTHON_SNAPSHOT_ZSTD: "pythons/{digest}.tar.zst",
    Kind.IMAGE: "images/{digest}.tar.zst",
    Kind.IMAGE_MANIFEST: "images/{digest}.json",
    Kind.BYTECODE: "bytecode/{digest}.tar.zst",
    Kind.UV: "tools/uv/{digest}/uv",
    Kind.BOOTSTRAP_SCRIPT: protocol.BOOTSTRAP_SCRIPT_KEY % "{digest}",
    Kind.BOOTSTRAP_MANIFEST: protocol.BOOTSTRAP_MANIFEST_KEY % "{digest}",
    Kind.LEASE: "leases/{digest}.json",
    Kind.SWEEP: "sweeps/{digest}.json",
    Kind.MARKER: "repro-store.json",  # says "this folder/prefix is a repro store": gc works only in one
    Kind.AUDIT: "audits/{digest}.json",  # a `repro audit`'s results, by the sha256 of its bytes (gc keeps them)
    Kind.BISECT_ANSWER: "bisect/{digest}.json",  # the run of a `repro bisect` hybrid, by its answer key (gc keeps them)
}

_SHA256, _SHA1 = "[0-9a-f]{64}", "[0-9a-f]{40}"
#: what {digest} is in each kind's key (a lease's: the hex of a random uuid)
_DIGESTS = {
    **dict.fromkeys(Kind, _SHA256),
    Kind.ARTIFACT: _SHA1,
    Kind.INPUT_ARTIFACT: _SHA1,
    Kind.LEASE: "[0-9a-f]{32}",
    Kind.SWEEP: "[0-9a-f]{32}",
}
_FIELDS = {
    "shard": "[0-9a-f]{2}",
    "name": FILE_NAME.pattern.strip("^$"),
    "flow": FLOW_DIR.pattern.strip("^$"),
    "run_id": _RUN_ID.pattern.strip("^$"),
}

#: objects named by their content (or, locks, by the env id that hashes theirs): what gc may collect
CONTENT_KINDS = (
    Kind.PACKAGE,
    Kind.LOCK,
    Kind.CODE,
    Kind.ARTIFACT,
    Kind.INPUT_BLOB,
    Kind.INPUT_ARTIFACT,
    Kind.PYTHON_SNAPSHOT,
    Kind.PYTHON_MANIFEST,
    Kind.PYTHON_SNAPSHOT_ZSTD,
    Kind.UV,
    Kind.BOOTSTRAP_SCRIPT,
    Kind.BOOTSTRAP_MANIFEST,
    Kind.IMAGE,
    Kind.IMAGE_MANIFEST,
    Kind.BYTECODE,
)
#: what Batch staging puts in the store beside a bootstrap manifest, which names them
STAGED_KINDS = frozenset({Kind.UV, Kind.BOOTSTRAP_SCRIPT, Kind.PYTHON_SNAPSHOT, Kind.PYTHON_MANIFEST, Kind.PACKAGE})


def _pattern(kind: Kind) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", _TEMPLATES[kind])  # literal, field, literal, field, ..., literal
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_DIGESTS[kind] if part == 'digest' else _FIELDS[part]})"
        for i, part in enumerate(parts)
    )
    return re.compile(regex)


_PATTERNS = {kind: _pattern(kind) for kind in Kind}


def prefix(kind: Kind) -> str:
    """The literal start of every key of ``kind``: what to list them by."""
    return _TEMPLATES[kind].split("{", 1)[0]


RUNS = prefix(Kind.RECORD)
LEASES = prefix(Kind.LEASE)
SWEEPS = prefix(Kind.SWEEP)
MARKER = prefix(Kind.MARKER)
AUDITS = prefix(Kind.AUDIT)
BOOTSTRAP_MANIFESTS = prefix(Kind.BOOTSTRAP_MANIFEST)
_TOOLS = "tools/"  # one folder per tool: each is an area of its own


def _area(kind: Kind) -> str:
    top = prefix(kind).split("/", 1)[0] + "/"
    return prefix(kind) if top == _TOOLS else top


#: the folders gc sweeps for objects no record names (runs/ and leases/ have rules of their own)
GC_AREAS = tuple(dict.fromkeys(_area(kind) for kind in CONTENT_KINDS))


@dataclass(frozen=True)
class Key:
    """A key, parsed: its kind and the fields its template holds (the others are "")."""

    kind: Kind
    digest: str = ""
    name: str = ""
    flow: str = ""
    run_id: str = ""

    def __str__(self) -> str:
        return _TEMPLATES[self.kind].format(
            digest=self.digest, shard=self.digest[:2], name=self.name, flow=self.flow, run_id=self.run_id
        )


def parse(key: str) -> Key | None:
    """The kind and fields of a key of store shape; None for any other string (junk, a key of no
    known kind, a shard that is not its digest's, a package file name with '..')."""
    if not isinstance(key, str):
        return None
    for kind, pattern in _PATTERNS.items():
        m = pattern.fullmatch(key)  # not match: "$" would let a key end in a newline
        if m is None:
            continue
        fields = m.groupdict()
        shard = fields.pop("shard", None)
        if shard is not None and shard != fields["digest"][:2]:
            return None
        if ".." in fields.get("name", ""):
            return None
        return Key(kind, **fields)
    return None


def parse_as(key: str, *kinds: Kind) -> Key | None:
    """``parse``, keeping only keys of ``kinds``."""
    parsed = parse(key)
    return parsed if parsed is not None and parsed.kind in kinds else None


def misplaced_record(key: str) -> bool:
    """A key under runs/ named like a record that is not where records are kept (a folder too deep, a
    flow or run id no record has): whoever reads records must not skip it silently, it may name objects."""
    name = "/" + _TEMPLATES[Kind.RECORD].rsplit("/", 1)[1]
    return key.startswith(RUNS) and key.endswith(name) and parse_as(key, Kind.RECORD) is None


# -- builders ------------------------------------------------------------------------------------


def package(sha256: str, filename: str) -> str:
    return str(Key(Kind.PACKAGE, digest=sha256, name=filename))


def lock(env_id: str) -> str:
    return str(Key(Kind.LOCK, digest=env_id))


def code(sha256: str) -> str:
    return str(Key(Kind.CODE, digest=sha256))


def python_snapshot(sha256: str, zstd: bool = False) -> str:
    """An interpreter snapshot (its install prefix, without site-packages), by the tarball's sha256:
    a gzip'd tar, or (``zstd``) a zstd'd one."""
    return str(Key(Kind.PYTHON_SNAPSHOT_ZSTD if zstd else Kind.PYTHON_SNAPSHOT, digest=sha256))


def python_manifest(sha256: str) -> str:
    """The snapshot's manifest (version, prefix, executable, fingerprint) beside it."""
    return str(Key(Kind.PYTHON_MANIFEST, digest=sha256))


def image(sha256: str) -> str:
    """A container image's root file system (a zstd'd tar, what ``docker import`` reads), by its sha256."""
    return str(Key(Kind.IMAGE, digest=sha256))


def image_manifest(sha256: str) -> str:
    """The image's manifest (recipe key, Debian release, package versions, sizes) beside it."""
    return str(Key(Kind.IMAGE_MANIFEST, digest=sha256))


def bytecode(sha256: str) -> str:
    """The ``.pyc`` files an env's first build compiled (a zstd'd tar of its site-packages' ``__pycache__``
    folders), by its sha256: a replay restores them instead of compiling."""
    return str(Key(Kind.BYTECODE, digest=sha256))


def artifact(sha1: str) -> str:
    return str(Key(Kind.ARTIFACT, digest=sha1))


def input_blob(sha256: str) -> str:
    """An input a run read (an IncludeFile's bytes), by the sha256 of its contents."""
    return str(Key(Kind.INPUT_BLOB, digest=sha256))


def input_artifact(sha1: str) -> str:
    """An artifact of another flow's run that a step read (input lineage), by Metaflow's sha1 of its pickle."""
    return str(Key(Kind.INPUT_ARTIFACT, digest=sha1))


def uv(sha256: str) -> str:
    """The uv binary Batch jobs build environments with (the host's own), by its sha256."""
    return str(Key(Kind.UV, digest=sha256))


def bootstrap_script(sha256: str) -> str:
    """batch_bootstrap.py, the script a Batch job runs first, by its sha256."""
    return str(Key(Kind.BOOTSTRAP_SCRIPT, digest=sha256))


def bootstrap_manifest(sha256: str) -> str:
    """What a Batch job fetches to make one env (``metaflow_repro.executors.batch.stage``), by its sha256."""
    return str(Key(Kind.BOOTSTRAP_MANIFEST, digest=sha256))


def lease(lease_id: str) -> str:
    """A lease (the keys a push or Batch staging in flight is about to name), by a random id."""
    return str(Key(Kind.LEASE, digest=lease_id))


def sweep(sweep_id: str) -> str:
    """A sweep (the keys a gc in flight is about to delete), by a random id."""
    return str(Key(Kind.SWEEP, digest=sweep_id))


def audit(sha256: str) -> str:
    """An audit document (``repro audit``), by the sha256 of its bytes."""
    return str(Key(Kind.AUDIT, digest=sha256))


def bisect_answer(key: str) -> str:
    """Which recorded run answers a `repro bisect` hybrid, by the hybrid's answer key (a sha256)."""
    return str(Key(Kind.BISECT_ANSWER, digest=key))


def _run_id(part: str) -> str:
    if not _RUN_ID.fullmatch(part or ""):  # fullmatch: "$" alone lets a newline end it
        raise BadInput(f"run id {part!r} may only contain letters, digits, '_', '-' and '.', and not start with '.'")
    return part


def identity_key(identity: str) -> str:
    """The folder of a flow identity under runs/: ``PlayListFlow:flows/a.py`` -> ``PlayListFlow@flows~a.py``,
    ``F:@proj/main`` -> ``F@@proj~main``."""
    cls, _, where = identity.partition(":")
    return f"{cls}@" + re.sub(r"[^A-Za-z0-9_.~@\-]", "_", where.replace("/", "~"))


def flow_dir(flow: str, identity: str = "") -> str:
    """Where a run's record goes: per identity (a class name alone for version 1 records)."""
    return identity_key(identity) if identity else flow


def _flow(name: str) -> str:
    if not FLOW_DIR.fullmatch(name or ""):
        raise BadInput(f"flow {name!r} is neither a flow class name nor a flow identity (Class@path~of~flow.py)")
    return name


def record(flow: str, run_id: str) -> str:
    """``flow``: a ``flow_dir`` (identity key, or class name)."""
    return str(Key(Kind.RECORD, flow=_flow(flow), run_id=_run_id(run_id)))


def latest(flow: str) -> str:
    return str(Key(Kind.LATEST, flow=_flow(flow)))


def runs_of_class(flow_class: str) -> str:
    """What to list the records of a flow class by: its class-name folder and every identity folder of
    that class (``runs/F`` is a key prefix, not a folder: it matches ``runs/F@flows~a.py/..`` too)."""
    return RUNS + _flow(flow_class)
