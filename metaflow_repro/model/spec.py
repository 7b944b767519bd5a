"""EnvSpec: what a step asked for, after merging the flow-level and step-level decorators.

Pure: no disk, no network, no subprocess. The flow loader (``flowfile``) hands us the raw
decorator attributes; we validate, normalise and merge them exactly as Metaflow's documentation
describes: step libraries override base libraries by name, step ``python`` and ``disabled``
override the base's, steps without a decorator get the base spec.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from metaflow_repro.errors import SpecError
from metaflow_repro.model.findings import Choice
from metaflow_repro.model.validate import short

MIN_PYTHON = (3, 7)
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_PYTHON = re.compile(r"^3\.\d+(\.\d+)?$")


@dataclass(frozen=True)
class Declaration:
    """One decorator as the user wrote it (flow-level ``*_base`` or step-level)."""

    kind: str  # "conda" | "pypi"
    libraries: dict[str, Any] | None = None
    python: object = None
    disabled: object = None
    channels: object = None


@dataclass(frozen=True)
class EnvSpec:
    """The normalised declaration of one step's environment (what the user asked for)."""

    flow: str
    step: str
    kind: str  # decorator family the libraries came from: "conda" | "pypi" | "none"
    source: str  # how they are resolved: "pypi" | "conda"
    python: str  # "3.11" (newest 3.11.x installed), "3.11.7" (exactly) or a PEP 440 specifier ("==3.11.*")
    libraries: tuple[tuple[str, str], ...] = ()  # stated by the user, merged, sorted
    implicit: tuple[tuple[str, str], ...] = ()  # added for Metaflow's own runtime needs
    channels: tuple[str, ...] = ()
    disabled: bool = False
    where: str = field(default="", compare=False)  # "flow.py, step 'start'" for messages
    #: conda-source = "conda" only: PyPI packages (a @pypi declaration mixed with @conda) installed
    #: with uv --no-deps on top of the conda env, after it
    pip: tuple[tuple[str, str], ...] = ()

    @property
    def requirements(self) -> dict[str, str]:
        """Every pinned requirement of the environment: implicit ones, overridden by stated ones."""
        merged = dict(self.implicit)
        merged.update(self.libraries)
        return dict(sorted(merged.items()))

    @property
    def spec_id(self) -> str:
        payload = {
            "kind": self.kind,
            "source": self.source,
            "python": self.python,
            "libraries": [list(x) for x in self.libraries],
            "implicit": [list(x) for x in self.implicit],
            "channels": list(self.channels),
            "disabled": self.disabled,
        }
        if self.pip:  # only when present: every spec id without pip packages stays as it was
            payload["pip"] = [list(x) for x in self.pip]
        return sha256_json(payload)


def sha256_json(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _where(flow: str, step: str | None) -> str:
    return f"flow {flow}, step '{step}'" if step else f"flow {flow} (flow-level decorator)"


def pin_of(name: str, version: Any, where: str) -> tuple[str, str]:
    """Validate one ``name: version`` entry; return (canonical name, exact version)."""
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        if isinstance(name, str) and "[" in name:
            raise SpecError(
                f"{where}: library {short(name)}: extras are not supported; "
                f"declare the extra's packages explicitly with exact versions"
            )
        raise SpecError(f"{where}: {short(name)} is not a valid package name")
    hint = f"write an exact version, e.g. {{'{name}': '1.2.3'}}"
    if not isinstance(version, str):
        raise SpecError(
            f"{where}: library '{name}' has version {short(version)}; "
            f"versions must be strings pinned to one exact version: {hint}"
        )
    text = version.strip()
    if text.startswith("=="):
        text = text[2:].strip()
    if not text:
        raise SpecError(
            f"{where}: library '{name}' is not pinned (empty version); {hint}. "
            "repro refuses unpinned libraries because the result could not be reproduced."
        )
    if any(c in text for c in "<>=!~*, ;"):
        raise SpecError(
            f"{where}: library '{name}' is not pinned to one exact version "
            f"({short(version)} is a range or wildcard); {hint}"
        )
    try:
        Version(text)
    except InvalidVersion:
        raise SpecError(
            f"{where}: library '{name}' has version {short(version)}, which is not a valid version; {hint}"
        ) from None
    return str(canonicalize_name(name.strip())), text


def _libraries(decl: Declaration, where: str) -> dict[str, str]:
    libs = decl.libraries or {}
    if not isinstance(libs, dict):
        key = "packages" if decl.kind == "pypi" else "libraries"
        raise SpecError(
            f"{where}: @{decl.kind}({key}=...) must be a dict of "
            f"{{'name': 'exact version'}}, got {type(libs).__name__} {short(libs)}"
        )
    out: dict[str, str] = {}
    for name, version in libs.items():
        key, pin = pin_of(name, version, where)
        if key in out and out[key] != pin:
            raise SpecError(
                f"{where}: library '{name}' is declared twice with different versions ({out[key]} and {pin})"
            )
        out[key] = pin
    return out


#: minor versions a specifier is tried against (what "selects some Python 3.7+" means)
_MINORS = range(MIN_PYTHON[1], 40)


def python_specifier(request: str) -> SpecifierSet | None:
    """The PEP 440 specifier a ``python=`` request stands for; None for '3.11' / '3.11.7' (matched by
    prefix / exactly) or text that is no specifier. '3.10.*' is read as '==3.10.*'."""
    text = request.strip()
    if _PYTHON.match(text):
        return None
    if text[:1].isdigit():
        if not text.endswith(".*"):
            return None  # a bare version is '3.11' / '3.11.7' or nothing
        text = "==" + text
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        return None


def python_matches(version: str, request: str) -> bool:
    """Whether the exact interpreter ``version`` ('3.11.7') satisfies a ``python=`` request."""
    spec = python_specifier(request)
    if spec is not None:
        return spec.contains(version, prereleases=False)
    if request.count(".") == 2:
        return version == request
    return version.startswith(request + ".")


def python_is_exact(request: str) -> bool:
    """'3.11.7' (or '==3.11.7'): one exact version, which the machine has or has not."""
    if _PYTHON.match(request) and request.count(".") == 2:
        return True
    spec = python_specifier(request)
    if spec is None or len(spec) != 1:
        return False
    (one,) = tuple(spec)
    return one.operator in ("==", "===") and "*" not in one.version and one.version.count(".") == 2


def python_minor(request: str) -> tuple[int, int]:
    """The oldest Python line a request admits (what Metaflow's implicit needs are pinned for)."""
    spec = python_specifier(request)
    if spec is None:
        return tuple(int(x) for x in request.split(".")[:2])  # type: ignore[return-value]
    for minor in _MINORS:
        if any(spec.contains(f"3.{minor}.{patch}") for patch in range(0, 40)):
            return (3, minor)
    return MIN_PYTHON


def _python(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, float | int) and not isinstance(value, bool):
        raise SpecError(
            f"{where}: python={short(value)} must be a string such as '3.10' (a number loses digits: 3.10 == 3.1)"
        )
    hint = "is not a Python version such as '3.11', '3.11.7', '3.11.*' or '>=3.10,<3.12'"
    if not isinstance(value, str):
        raise SpecError(f"{where}: python={short(value)} {hint}")
    text = value.strip()
    spec = python_specifier(text)
    if spec is None and not _PYTHON.match(text):
        raise SpecError(f"{where}: python={short(value)} {hint}")
    if spec is not None:
        text = ",".join(sorted(str(s) for s in spec))  # one spelling per meaning: '3.10.*' == '==3.10.*'
        admits = [m for m in range(0, _MINORS.stop) if any(spec.contains(f"3.{m}.{p}") for p in range(0, 40))]
        if not admits:
            raise SpecError(f"{where}: python={short(value)} admits no Python 3 version; write e.g. '3.11.*'")
        if all(m < MIN_PYTHON[1] for m in admits):
            raise SpecError(
                f"{where}: python={short(value)} is not supported: Metaflow 2.19 needs "
                f"Python 3.7 or newer inside a step; choose python='3.7' or later"
            )
        return text
    major_minor = tuple(int(x) for x in text.split(".")[:2])
    if major_minor < MIN_PYTHON:
        raise SpecError(
            f"{where}: python={short(text)} is not supported: Metaflow 2.19 needs "
            f"Python 3.7 or newer inside a step; choose python='3.7' or later"
        )
    return text


def _disabled(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise SpecError(f"{where}: disabled={short(value)} must be True or False")


def _channels(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) and c for c in value):
        raise SpecError(f"{where}: channels={short(value)} must be a list of channel names or URLs")
    return tuple(value)


def implicit_needs(python: str, s3_datastore: bool) -> dict[str, str]:
    """Metaflow's own runtime needs inside a step, pinned per Python line.

    The pins are part of repro's policy and therefore of the spec id: changing them makes locks
    stale, which is what a reproducibility tool should do.
    """
    minor = python_minor(python)
    needs = {"requests": "2.31.0" if minor < (3, 8) else "2.32.3"}
    if s3_datastore:
        needs["boto3"] = "1.33.13" if minor < (3, 8) else "1.35.99"
    return needs


class Family(Choice):
    """The decorator family a step's libraries come from (``EnvSpec.kind``)."""

    CONDA = "conda"
    PYPI = "pypi"
    #: neither the flow nor the step has a decorator
    NONE = "none"


class Source(Choice):
    """Where a step's packages are resolved from (``EnvSpec.source``)."""

    PYPI = "pypi"
    CONDA = "conda"
    #: a disabled step: it runs in the user's own interpreter, nothing is resolved
    NONE = "none"


def _one_per_level(flow: str, level: str | None, decls: list[Declaration]) -> Declaration | None:
    """The level's single declaration: one family and one decorator per flow (level None) or step."""
    kinds = sorted({d.kind for d in decls})
    if len(kinds) > 1:
        names = " and ".join(f"@{k}" + ("_base" if level is None else "") for k in kinds)
        raise SpecError(
            f"{_where(flow, level)}: {names} cannot both be used on the same "
            f"{'flow' if level is None else 'step'}; choose one"
        )
    if len(decls) > 1:
        raise SpecError(f"{_where(flow, level)}: @{decls[0].kind} is applied more than once")
    return decls[0] if decls else None


def _as_conda(decl: Declaration) -> Declaration:
    """A @pypi declaration whose packages went on top of the conda env: only its python/disabled remain."""
    return Declaration(Family.CONDA.value, None, decl.python, decl.disabled, None)


def _mix_pypi_into_conda(
    b: Declaration | None, s: Declaration | None, conda_source: str | None, b_where: str, where: str
) -> tuple[Declaration | None, Declaration | None, dict[str, str]]:
    """The pixi model: with conda-source "conda", a @pypi level mixed with a @conda level (either way
    round) leaves the @conda side as the conda env and gives the @pypi side's packages to uv on top of it.

    ``not s.disabled`` reads the raw value on purpose: it is checked before the step is validated."""
    if not (b and s and {b.kind, s.kind} == {Family.CONDA, Family.PYPI}):
        return b, s, {}
    if conda_source != Source.CONDA or s.disabled:
        return b, s, {}
    if b.kind == Family.PYPI:
        return _as_conda(b), s, _libraries(b, b_where)
    return b, _as_conda(s), _libraries(s, where)


@dataclass(frozen=True)
class _Combined:
    """One level's declaration read and validated, or the flow level overlaid by the step level."""

    libraries: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    disabled: bool | None = None
    channels: tuple[str, ...] = ()


def _read(decl: Declaration | None, where: str) -> _Combined:
    """One level validated, field by field in a fixed order (the first error is the one reported)."""
    if decl is None:
        return _Combined()
    return _Combined(
        libraries=_libraries(decl, where),
        python=_python(decl.python, where),
        disabled=_disabled(decl.disabled, where),
        channels=_channels(decl.channels, where),
    )


def _combine(base: _Combined, own: _Combined) -> _Combined:
    """The step level over the flow level: libraries by name, python, disabled and channels when given."""
    return _Combined(
        libraries={**base.libraries, **own.libraries},
        python=own.python or base.python,
        disabled=base.disabled if own.disabled is None else own.disabled,
        channels=own.channels or base.channels,
    )


def _refuse_overlap(pip: dict[str, str], libraries: dict[str, str], where: str) -> None:
    both = sorted(set(pip) & set(libraries))
    if both:
        raise SpecError(f"{where}: {', '.join(both)} declared both in @conda and in @pypi; declare each once")


def _conda_source(
    declared: set[str], conda_source: str | None, channels: tuple[str, ...], default: tuple[str, ...], where: str
) -> tuple[Source, tuple[str, ...]]:
    """Where @conda libraries are served from, which the conda-source setting decides."""
    if conda_source == Source.PYPI or (conda_source == Source.CONDA and Family.PYPI in declared):
        # a step that mixes @pypi into @conda_base (or the reverse) is served from PyPI
        return Source.PYPI, channels
    if conda_source != Source.CONDA:
        raise SpecError(
            f'{where}: @conda libraries need a conda-source: set conda-source = "conda" (packages from '
            'conda channels) or conda-source = "pypi" (the same names served from PyPI) under [tool.repro] '
            "in pyproject.toml, or REPRO_CONDA_SOURCE=conda or REPRO_CONDA_SOURCE=pypi in the environment."
        )
    channels = channels or tuple(default)
    if not channels:
        raise SpecError(
            f"{where}: @conda needs at least one conda channel: give @conda(channels=[...]), or set "
            "channels under [tool.repro] in pyproject.toml or REPRO_CONDA_CHANNELS"
        )
    return Source.CONDA, channels


def _choose_source(
    declared: set[str], conda_source: str | None, channels: tuple[str, ...], default: tuple[str, ...], where: str
) -> tuple[Source, tuple[str, ...]]:
    """The source of an enabled step, with the channels it resolves from."""
    if Family.CONDA in declared:
        return _conda_source(declared, conda_source, channels, default, where)
    if not declared and conda_source == Source.CONDA and default:
        # a step with no decorator gets the bare environment (Python + Metaflow's needs) from the channels
        return Source.CONDA, tuple(default)
    return Source.PYPI, channels


def merge(
    flow: str,
    step: str,
    base: list[Declaration],
    own: list[Declaration],
    default_python: str,
    conda_source: str | None,
    s3_datastore: bool = False,
    default_channels: tuple[str, ...] = (),
) -> EnvSpec:
    """Merge flow-level and step-level declarations into the step's EnvSpec: validate the levels,
    combine them, choose the source."""
    where, b_where = _where(flow, step), _where(flow, None)
    b, s = _one_per_level(flow, None, base), _one_per_level(flow, step, own)
    b, s, pip = _mix_pypi_into_conda(b, s, conda_source, b_where, where)
    env = _combine(_read(b, b_where), _read(s, where))
    chosen = s or b
    kind = chosen.kind if chosen else Family.NONE.value
    python = env.python or default_python
    libraries = tuple(sorted(env.libraries.items()))
    if env.disabled:
        # Runs in the user's own interpreter: nothing to resolve, nothing implicit to add.
        return EnvSpec(
            flow=flow,
            step=step,
            kind=kind,
            source=Source.NONE.value,
            python=python,
            libraries=libraries,
            channels=env.channels,
            disabled=True,
            where=where,
        )
    _refuse_overlap(pip, env.libraries, where)
    declared = {d.kind for d in (b, s) if d}
    source, channels = _choose_source(declared, conda_source, env.channels, default_channels, where)
    return EnvSpec(
        flow=flow,
        step=step,
        kind=kind,
        source=source.value,
        python=python,
        libraries=libraries,
        implicit=tuple(sorted(implicit_needs(python, s3_datastore).items())),
        channels=channels,
        disabled=False,
        where=where,
        pip=tuple(sorted(pip.items())),
    )
