"""Load a flow file the way Metaflow does (by importing it) and read its decorators.

Importing runs the user's module-level code, so computed values such as
``python=get_python_version()`` work. The ``if __name__ == '__main__'`` guard keeps the flow
from starting. Everything returned is plain data; merging and validation live in ``spec``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaflow_repro.errors import FlowLoadError, NoFlowFound
from metaflow_repro.model.spec import Declaration
from metaflow_repro.model.validate import cap

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


def import_flow_module(path: Path, variant: str = ""):
    """Import the flow file once per (path, content, ``variant``): configs are applied to the class
    itself, so each set of config values gets its own module."""
    path = Path(path)
    if not path.is_file():
        raise FlowLoadError(f"{path}: no such flow file")
    if path.suffix != ".py":
        raise FlowLoadError(f"{path}: a flow file must be a .py file")
    _refuse_without_classes(path)
    # One module per (path, content): an edited flow file is imported afresh, an unchanged one once.
    digest = hashlib.sha1(
        str(path.resolve()).encode() + b"\0" + path.read_bytes() + b"\0" + variant.encode()
    ).hexdigest()[:12]
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


def _flow_classes(module) -> list[Any]:
    """The FlowSpec subclasses the file defines, found as Metaflow finds them
    (``metaflow.runner.click_api.extract_flow_class_from_file``): a name bound to a ``FlowMutator``
    (``@MyMutator`` on the class) stands for the class it holds."""
    from metaflow import FlowSpec
    from metaflow.user_decorators.user_flow_decorator import FlowMutator

    found: list[Any] = []
    for obj in vars(module).values():
        cls = obj._flow_cls if isinstance(obj, FlowMutator) else obj
        if (
            isinstance(cls, type)
            and issubclass(cls, FlowSpec)
            and cls is not FlowSpec
            and cls.__module__ == module.__name__
            and cls not in found
        ):
            found.append(cls)
    return found


def graph_ends(graph) -> tuple[str | None, str | None]:
    """A flow graph's start and end steps, as the graph names them (``@step(start=True)`` /
    ``@step(end=True)``, else the steps of those names; None: it has none). A Metaflow whose graph does
    not name them (before 2.19's annotations) gives the graph's own shape: no step goes to the start,
    the end goes nowhere."""
    if hasattr(graph, "start_step"):
        return graph.start_step, graph.end_step
    into = {name for node in graph for name in node.out_funcs}
    starts = [node.name for node in graph if node.name not in into]
    ends = [node.name for node in graph if not node.out_funcs]
    return (starts[0] if len(starts) == 1 else None), (ends[0] if len(ends) == 1 else None)


def _flow_class(module, path: Path):
    classes = _flow_classes(module)
    if not classes:
        raise NoFlowFound(f"{path}: no Metaflow flow found (no class deriving from FlowSpec)")
    # A flow has a start step; a base class that another flow here derives from is not a flow.
    found = [c for c in classes if graph_ends(c._graph)[0] is not None]
    found = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if not found:
        names = cap(sorted(c.__name__ for c in classes))
        raise FlowLoadError(
            f"{path}: no Metaflow flow found: the classes deriving from FlowSpec here ({names}) have no start "
            "step (a step marked @step(start=True), or one named start), so Metaflow cannot run them. Give the "
            "flow its start step; a module of base classes or helpers can be named with a leading underscore "
            "(_base.py), which repro never collects."
        )
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
    """Read the decorators of a FlowSpec class (imported by us, or live inside Metaflow's runtime),
    as Metaflow's runtime has them: configs applied first (a no-op where Metaflow already did)."""
    apply_configs(cls)
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


#: Metaflow's own variables for config values (read by its ``--config`` / ``--config-value`` options)
CONFIG_ENV_VARS = ("METAFLOW_FLOW_CONFIG", "METAFLOW_FLOW_CONFIG_VALUE")
#: the options of Metaflow's top level that set config values (they go before ``run``), with how
#: many values each takes
CONFIG_OPTIONS = {"--config": 2, "--config-value": 2, "--local-config-file": 1}


def config_args(args: Sequence[str]) -> list[str]:
    """The options among ``args`` (Metaflow options, as a user gives them to ``run``) that set config
    values: ``--config NAME FILE``, ``--config-value NAME VALUE``, ``--local-config-file FILE``."""
    out, i = [], 0
    args = list(args)
    while i < len(args):
        n = CONFIG_OPTIONS.get(args[i].split("=", 1)[0])
        if n is None:
            i += 1
            continue
        take = 1 + (n - 1 if "=" in args[i] else n)
        out += args[i : i + take]
        i += take
    return out


def has_configs(cls) -> bool:
    return any(getattr(p, "IS_CONFIG_PARAMETER", False) for _, p in cls._get_parameters())


def _config_values(cls, args: Sequence[str]):
    """Config values exactly as Metaflow's command line resolves them: its own ``--config`` and
    ``--config-value`` options (defaults, files, values, parsers, ``METAFLOW_FLOW_CONFIG*``)."""
    from metaflow._vendor import click
    from metaflow.parameters import flow_context
    from metaflow.user_configs.config_options import ConfigInput, LocalFileInput, config_options_with_config_input

    class _Obj:
        flow = type("Flow", (), {"name": cls.__name__})  # what Metaflow's option callback reads

    with flow_context(cls):
        cmd = click.Command(
            "configs",
            params=[
                click.Option(["--quiet"], is_flag=True, default=True, is_eager=True),
                click.Option(["--datastore"], default="local", is_eager=True),
                click.Option(
                    ["--local-config-file"],
                    type=LocalFileInput(exists=True, readable=True, dir_okay=False, resolve_path=True),
                    is_eager=True,
                ),
            ],
        )
        cmd, found = config_options_with_config_input(cmd)
        if not found:
            return {}
        obj = _Obj()
        saved = ConfigInput.config_file, ConfigInput.loaded_configs  # Metaflow keeps these per process
        ConfigInput.config_file, ConfigInput.loaded_configs = None, None
        try:
            ctx = cmd.make_context("configs", list(args), obj=obj)
        except click.ClickException as exc:
            raise FlowLoadError(
                f"{cls.__name__}: bad config options {' '.join(args)}: {exc.format_message()}"
            ) from None
        finally:
            ConfigInput.config_file, ConfigInput.loaded_configs = saved
        error = getattr(obj, "delayed_config_exception", None)
        if error is not None:
            raise FlowLoadError(f"{cls.__name__}: {error.format_message()}")
        return ctx.params.get("config") or ctx.params.get("config_value") or {}


def apply_configs(cls, args: Sequence[str] = ()) -> None:
    """Bring an imported FlowSpec class to the state Metaflow's runtime has it in when it starts a
    run: config values resolved, flow and step mutators applied, every decorator's attributes
    evaluated (``config_expr``, ``**config_expr(...)``). Metaflow's own functions, in its order."""
    from metaflow.parameters import flow_context

    if getattr(cls, "_configs_processed", False):
        return  # already applied (inside Metaflow's runtime, or a module imported for these values)
    try:
        with flow_context(cls):  # as Metaflow's main(): configs resolve against the flow being run
            _apply_configs(cls, args)
    except FlowLoadError:
        raise
    except Exception as exc:  # a parser or mutator of the user's raised: say which flow, as Metaflow would
        raise FlowLoadError(
            f"{cls.__name__}: applying its configs failed: {type(exc).__name__}: {exc}\n"
            f"`python <flow file> show` reproduces it."
        ) from None


def _flow_mutators(cls) -> list:
    """The flow's mutators: ``_flow_state`` is keyed by ``FlowStateItems`` since Metaflow 2.19.x, by
    ``_FlowState`` before (2.16 to 2.19.x), whose key was ``CONFIG_DECORATORS`` in 2.16.0."""
    import metaflow.flowspec as spec

    items: Any = getattr(spec, "FlowStateItems", None) or getattr(spec, "_FlowState")  # noqa: B009
    key = getattr(items, "FLOW_MUTATORS", None) or items.CONFIG_DECORATORS
    return list(cls._flow_state.get(key, []))


def _mutate_step(cls, step, deco) -> None:
    """A step mutator's ``mutate``, as Metaflow's ``decorators._init_step_decorators`` runs it (once)."""
    from metaflow import decorators as mfdecos

    run = getattr(mfdecos, "_run_step_mutator", None)
    if run is not None:
        if not deco._mutate_called:
            run(cls, step, deco, "Evaluating step level decorator %s for %s (mutate)")
        return
    from metaflow.user_decorators.mutable_step import MutableStep  # older Metaflow: no guard, no helper

    inserted_by: Any = [deco.decorator_name] + (deco.inserted_by or [])  # as Metaflow 2.16 does
    deco.mutate(
        MutableStep(cls, step, pre_mutate=False, statically_defined=deco.statically_defined, inserted_by=inserted_by)
    )


def _apply_configs(cls, args: Sequence[str]) -> None:
    from metaflow.user_decorators.mutable_flow import MutableFlow
    from metaflow.user_decorators.user_flow_decorator import FlowMutator
    from metaflow.user_decorators.user_step_decorator import StepMutator

    # cli.start: config values, flow mutators' init, pre-mutate (FlowSpec._process_config_decorators)
    values = _config_values(cls, args)
    for deco in _flow_mutators(cls):
        deco.external_init()
    cls._process_config_decorators(values)
    # decorators._init_flow_decorators: flow decorators' attributes
    for decos in _flow_decorators(cls).values():
        for deco in decos:
            deco.external_init()
    # decorators._init_step_decorators: mutate, then step decorators' attributes
    for deco in _flow_mutators(cls):
        if isinstance(deco, FlowMutator):
            inserted_by: Any = [getattr(deco, "decorator_name", None)] + (deco.inserted_by or [])  # as Metaflow
            deco.mutate(
                MutableFlow(cls, pre_mutate=False, statically_defined=deco.statically_defined, inserted_by=inserted_by)
            )
    for step in cls._steps:
        for deco in step.config_decorators:
            if isinstance(deco, StepMutator):
                _mutate_step(cls, step, deco)
        if step.config_decorators:
            setattr(cls, step.name, step)
    cls._init_graph()
    for step in cls._steps:
        for deco in step.decorators:
            deco.external_init()


def parameter_names(path: Path) -> tuple[str, ...]:
    """The names of the flow's Parameters (IncludeFiles and Configs too), without resolving any config
    value (a replay checks a record's parameters with these before it has the config files), and
    those its flow mutators add (``mutable_flow.add_parameter``) with the configs' default values."""
    path = Path(path)
    cls = _flow_class(import_flow_module(path, "parameters"), path)
    names = [name for name, _ in cls._get_parameters()]
    return tuple(names + [name for name in _mutator_parameters(path, cls) if name not in names])


def _mutator_parameters(path: Path, static) -> list[str]:
    """The Parameters of the flow once its flow mutators ran, with its configs' defaults (a module of its
    own: applying them changes the class); none when it has no flow mutator or they fail without values."""
    if not _flow_mutators(static):  # every supported release (its key's name changed over 2.16-2.19)
        return []
    cls = _flow_class(import_flow_module(path, "parameters, mutated"), path)
    try:
        apply_configs(cls)
    except FlowLoadError:
        return []
    return [name for name, _ in cls._get_parameters()]


def flow_name(path: Path) -> str:
    """The class name of the flow the file runs, read as ``parameter_names`` reads the flow (a replay
    checks it is the recorded flow before anything runs)."""
    path = Path(path)
    return str(_flow_class(import_flow_module(path, "parameters"), path).__name__)


def batch_steps(path: Path) -> tuple[str, ...]:
    """The steps the flow's own code decorates ``@batch`` (in graph order): Metaflow sends them to AWS
    Batch whatever the run options say. Static decorators only (no config value is resolved, no
    mutator applied), as ``parameter_names`` reads the flow."""
    path = Path(path)
    cls = _flow_class(import_flow_module(path, "parameters"), path)
    return tuple(
        name
        for name in cls._graph.sorted_nodes
        if any(getattr(d, "name", None) == "batch" for d in getattr(getattr(cls, name), "decorators", []))
    )


def load_flow(path: Path, metaflow_args: Sequence[str] = ()) -> FlowDeclarations:
    """The flow's declarations as Metaflow's runtime sees them when it starts ``run`` with these
    options (only ``--config`` / ``--config-value`` among them matter here)."""
    path = Path(path)
    configs = config_args(metaflow_args)
    variant = "\0".join([*configs, *(f"{k}={os.environ.get(k, '')}" for k in CONFIG_ENV_VARS)])
    module = import_flow_module(path, variant)
    cls = _flow_class(module, path)
    apply_configs(cls, configs)
    return declarations_of(cls, path)
