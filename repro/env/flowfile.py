"""Load a flow file the way Metaflow does (by importing it) and read its decorators.

Importing runs the user's module-level code, so computed values such as
``python=get_python_version()`` work. The ``if __name__ == '__main__'`` guard keeps the flow
from starting. Everything returned is plain data; merging and validation live in ``spec``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import FlowLoadError, NoFlowFound
from repro.model.spec import Declaration
from repro.model.validate import cap

STEP_DECORATORS = {"conda": "conda", "pypi": "pypi"}
FLOW_DECORATORS = {"conda_base": "conda", "pypi_base": "pypi"}


@dataclass(frozen=True)
class FlowDeclarations:
    path: Path
    name: str  # the FlowSpec class name
    steps: tuple[str, ...]  # in graph order, start first
    base: tuple[Declaration, ...]
    per_step: dict  # step -> tuple[Declaration, ...]
    s3_datastore: bool = False
    parameters: tuple[str, ...] = ()  # names of the flow's Parameters
    graph: dict | None = None  # step -> tuple of the steps it goes to next
    #: parameter name -> ParameterInfo (kind "parameter" | "include" | "config", and what a replay needs)
    parameter_info: dict = field(default_factory=dict)
    project: ProjectInfo | None = None  # the flow's @project, if it has one


@dataclass(frozen=True)
class ProjectInfo:
    """A flow's ``@project``: its runs belong to the project's branch, not to the flow file."""

    name: str
    branch: str = ""  # @project(branch=...), else the command line's --branch, else the user's branch
    production: bool = False  # @project(production=True)


@dataclass(frozen=True)
class ParameterInfo:
    kind: str  # "parameter", "include" (IncludeFile) or "config" (Config)
    default_file: str = ""  # IncludeFile / Config: the default file name as written, if any
    parser: bool = False  # Config: has a parser
    plain: bool = False  # Config: plain=True


def _parameter_info(param) -> ParameterInfo:
    from metaflow import IncludeFile

    if getattr(param, "IS_CONFIG_PARAMETER", False):
        default = param.kwargs.get("default") or getattr(param, "_override_kwargs", {}).get("default")
        return ParameterInfo(
            "config",
            default if isinstance(default, str) else "",
            parser=getattr(param, "parser", None) is not None,
            plain=bool(param.kwargs.get("plain", False)),
        )
    if isinstance(param, IncludeFile):
        default = param.kwargs.get("default") or getattr(param, "_override_kwargs", {}).get("default")
        shown = getattr(default, "print_representation", default)
        return ParameterInfo("include", shown if isinstance(shown, str) else "")
    return ParameterInfo("parameter")


def _declaration(kind: str, attributes: dict) -> Declaration:
    libs = attributes.get("libraries") or None
    pkgs = attributes.get("packages") or None
    if kind == "conda" and libs is not None and pkgs is not None:
        libs = {**pkgs, **libs} if isinstance(libs, dict) and isinstance(pkgs, dict) else libs
    return Declaration(
        kind=kind,
        libraries=libs if libs is not None else (pkgs if pkgs is not None else {}),
        python=attributes.get("python"),
        disabled=attributes.get("disabled"),
        channels=attributes.get("channels"),
    )


def is_flow_candidate(path: Path) -> bool:
    """Cheap test, without importing: a .py file that is not a test module, conftest, or a
    package/private module, and that mentions FlowSpec."""
    path = Path(path)
    if path.suffix != ".py" or path.name.startswith(("_", "conftest", "test_")):
        return False
    try:
        return "FlowSpec" in path.read_text(errors="replace")
    except OSError:
        return False


def _refuse_without_classes(path: Path) -> None:
    """A file that neither mentions FlowSpec nor defines a class deriving from anything cannot hold a
    flow: say so without running its top-level code."""
    import ast

    source = path.read_bytes()
    if b"FlowSpec" in source:
        return  # may well be a flow: importing it tells (and reports its import errors)
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError:
        return  # importing it reports the syntax error with its context
    if not any(isinstance(node, ast.ClassDef) and node.bases for node in ast.walk(tree)):
        raise NoFlowFound(f"{path}: no Metaflow flow found (no class deriving from FlowSpec); the file was not run")


def import_flow_module(path: Path):
    path = Path(path)
    if not path.is_file():
        raise FlowLoadError(f"{path}: no such flow file")
    if path.suffix != ".py":
        raise FlowLoadError(f"{path}: a flow file must be a .py file")
    _refuse_without_classes(path)
    # One module per (path, content): an edited flow file is imported afresh, an unchanged one once.
    digest = hashlib.sha1(str(path.resolve()).encode() + b"\0" + path.read_bytes()).hexdigest()[:12]
    module_name = f"_repro_flow_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # not for an existing .py file: checked above
        raise ImportError(f"{path}: Python gives no module spec (or no loader) for this file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        tail = "".join(tb[-3:]).rstrip()
        raise FlowLoadError(
            f"{path}: the flow file does not import: {type(exc).__name__}: {exc}\n{tail}\n"
            f"Fix the error above; `python {path} show` reproduces it."
        ) from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def _flow_class(module, path: Path):
    from metaflow import FlowSpec

    # Any: a flow's steps are attributes of the user's subclass, which FlowSpec does not declare
    classes: list[Any] = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, FlowSpec)
        and obj is not FlowSpec
        and obj.__module__ == module.__name__
    ]
    # A flow has a start step; a base class that another flow here derives from is not a flow.
    found = [c for c in classes if callable(getattr(c, "start", None)) and getattr(c.start, "is_step", False)]
    found = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if not found:
        raise NoFlowFound(f"{path}: no Metaflow flow found (no class deriving from FlowSpec with a start step)")
    if len(found) > 1:
        names = cap(sorted(c.__name__ for c in found))
        raise FlowLoadError(f"{path}: more than one flow in one file ({names}); keep one per file")
    return found[0]


def _flow_decorators(cls) -> dict:
    try:
        from metaflow.flowspec import FlowStateItems

        return dict(cls._flow_state[FlowStateItems.FLOW_DECORATORS])
    except (ImportError, AttributeError):  # older Metaflow
        return dict(getattr(cls, "_flow_decorators", {}))


def _s3_datastore() -> bool:
    try:
        from metaflow.metaflow_config import DEFAULT_DATASTORE
    except ImportError:
        return False
    return DEFAULT_DATASTORE == "s3"


def _user_declared(deco) -> bool:
    """Decorators written in the flow file, not the ones Metaflow attaches to every step
    (``--environment=conda`` attaches an empty ``@conda`` to each step that has none)."""
    return bool(getattr(deco, "statically_defined", True))


def _project_of(cls) -> ProjectInfo | None:
    for deco in _flow_decorators(cls).get("project", []):
        attrs = dict(deco.attributes)
        if attrs.get("name"):
            return ProjectInfo(
                name=str(attrs["name"]), branch=str(attrs.get("branch") or ""), production=bool(attrs.get("production"))
            )
    return None


def declarations_of(cls, path: Path) -> FlowDeclarations:
    """Read the decorators of a FlowSpec class (imported by us, or live inside Metaflow's runtime)."""
    base: list[Declaration] = []
    for deco_name, decos in sorted(_flow_decorators(cls).items()):
        kind = FLOW_DECORATORS.get(deco_name)
        if kind:
            base.extend(_declaration(kind, dict(d.attributes)) for d in decos if _user_declared(d))
    steps = tuple(cls._graph.sorted_nodes)
    per_step = {}
    for name in steps:
        func = getattr(cls, name)
        per_step[name] = tuple(
            _declaration(STEP_DECORATORS[d.name], dict(d.attributes))
            for d in getattr(func, "decorators", [])
            if d.name in STEP_DECORATORS and _user_declared(d)
        )
    try:
        found = list(cls._get_parameters())
        params = tuple(name for name, _ in found)
        info = {name: _parameter_info(param) for name, param in found}
    except Exception:
        params, info = (), {}
    graph = {node.name: tuple(node.out_funcs) for node in cls._graph}
    return FlowDeclarations(
        project=_project_of(cls),
        path=Path(path).resolve(),
        name=cls.__name__,
        steps=steps,
        base=tuple(base),
        per_step=per_step,
        s3_datastore=_s3_datastore(),
        parameters=params,
        graph=graph,
        parameter_info=info,
    )


def load_flow(path: Path) -> FlowDeclarations:
    path = Path(path)
    module = import_flow_module(path)
    return declarations_of(_flow_class(module, path), path)
