"""Collection nodes for `pytest --repro`: a flow file, its flow, one item per step and the
`[lock]`, `[pickle]` and `[baseline]` items. Each item only reads the session's Outcome."""

from __future__ import annotations

import warnings

import pytest

from metaflow_repro.checks.compare import Verdict
from metaflow_repro.checks.repeat import NONDETERMINISTIC
from metaflow_repro.errors import NoFlowFound, ReproError
from metaflow_repro.model import outcomes
from metaflow_repro.model.record import PickleStatus
from metaflow_repro.model.validate import cap_lines
from metaflow_repro.pytest.session import (
    CAUGHT_PROPERTY,
    lock_advice,
    lock_problems,
    replay_problems,
    session_of,
    step_problems,
    step_skip,
)


class ReproFailure(Exception):
    """An item's failure, already worded for the user (shown without a traceback)."""


class ReproPickleWarning(UserWarning):
    """An artifact loads in an environment that reads it, but with a warning or other versions."""


class ReproNondeterministicWarning(UserWarning):
    """An artifact differs between repeats (``--repro-repeat``) and ``[tool.repro] nondeterministic`` accepts it."""


class ReproCaughtWarning(UserWarning):
    """A step raised and ``@catch`` handled it: the step passes as "caught", its work was not done."""


class FlowFile(pytest.File):
    def collect(self):
        try:
            decl = session_of(self.config).declarations(self.path)
        except NoFlowFound as exc:
            if self.session.isinitpath(self.path):  # named on the command line: say why nothing runs
                raise self.CollectError(str(exc)) from None
            return  # found in a folder, mentions FlowSpec but defines no subclass of it: not a flow file
        except ReproError as exc:
            raise self.CollectError(str(exc)) from None
        yield FlowNode.from_parent(self, name=decl.name, steps=decl.steps)


class FlowNode(pytest.Collector):
    def __init__(self, *, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def collect(self):
        for step in self.steps:
            yield StepItem.from_parent(self, name=step, step=step)
        yield LockItem.from_parent(self, name="[lock]")
        yield PickleItem.from_parent(self, name="[pickle]")
        if session_of(self.session.config).options.baseline:
            yield BaselineItem.from_parent(self, name="[baseline]")
        if session_of(self.session.config).options.elsewhere:
            yield ReplayItem.from_parent(self, name="[replay]")


class _ReproItem(pytest.Item):
    def outcome(self):
        o = session_of(self.config).outcome(self.path)
        reason = step_skip(o) if not isinstance(self, LockItem) else None
        if reason:
            pytest.skip(reason)
        return o

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ReproFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, self.nodeid.split("::", 1)[-1]


class StepItem(_ReproItem):
    def __init__(self, *, step, **kwargs):
        super().__init__(**kwargs)
        self.step = step

    def runtest(self):
        o = self.outcome()
        record = o.record
        s = record.steps.get(self.step) if record else None
        if s is not None:
            envs = sorted({t.env_id for t in s.tasks.values()})
            fps = sorted({t.fingerprint for t in s.tasks.values()})
            self.user_properties += [("repro_env_id", ",".join(envs)), ("repro_fingerprint", ",".join(fps))]
        problems, notes = step_problems(o, self.step)
        for note in notes:
            kind = ReproNondeterministicWarning if note.startswith(NONDETERMINISTIC) else ReproPickleWarning
            warnings.warn(kind(f"{o.flow}.{self.step}: {note}"), stacklevel=2)
        if problems:
            raise ReproFailure(f"{o.flow}.{self.step} failed:\n" + "\n".join(cap_lines(problems, indent="")))
        if record is not None:
            self._switch_or_catch(o.flow, record)

    def _switch_or_catch(self, flow: str, record) -> None:
        """A step a switch did not take is skipped (not run); one whose exception @catch handled passes as
        caught (a user property the session shows as CAUGHT, and a warning naming the exception)."""
        took = outcomes.switch_taken(record, self.step)
        if took:
            pytest.skip(f"not run: {outcomes.not_taken_reason(*took)}")
        caught = outcomes.caught_message(record, self.step)
        if caught:
            self.user_properties.append((CAUGHT_PROPERTY, caught))
            warnings.warn(ReproCaughtWarning(f"{flow}.{self.step}: {caught}"), stacklevel=2)


class LockItem(_ReproItem):
    def runtest(self):
        o = self.outcome()
        lines = lock_problems(o)
        if lines:
            raise ReproFailure(
                f"{o.flow or self.path.name}: the lock does not hold:\n  "
                + "\n  ".join(cap_lines(lines, indent=""))
                + "\n"
                + lock_advice(o, self.path.name)
            )


class PickleItem(_ReproItem):
    def runtest(self):
        o = self.outcome()
        if o.record is None:
            raise ReproFailure(f"{o.flow}: no run to check: {o.error or 'the run failed'}")
        fails = [c for c in o.record.pickle_checks if c.status == PickleStatus.FAILS]
        for c in o.record.pickle_checks:
            if c.status == PickleStatus.WARNING:
                warnings.warn(
                    ReproPickleWarning(
                        f"{o.flow}: {c.step}.{c.artifact} read by {','.join(c.reader_steps)}: "
                        f"{'; '.join(x for x in (c.detail, c.static) if x)}"
                    ),
                    stacklevel=2,
                )
        if fails:
            raise ReproFailure(
                f"{o.flow}: {len(fails)} artifact(s) cannot be unpickled where they are read:\n"
                + "\n".join(
                    cap_lines(
                        f"  {c.step}/{c.task}.{c.artifact} in {', '.join(c.reader_steps)} "
                        f"(env {c.reader_env[:12]}): {c.detail}" + (f" [{c.static}]" if c.static else "")
                        for c in fails
                    )
                )
            )


class BaselineItem(_ReproItem):
    def runtest(self):
        o = self.outcome()
        if o.comparison is None:
            raise ReproFailure(
                f"{o.flow}: nothing to compare with {o.baseline or 'the baseline'}: {o.error or 'the run failed'}"
            )
        diffs = [r for r in o.comparison.results if r.verdict is Verdict.DIFFERENT]
        if diffs:
            raise ReproFailure(
                f"{o.flow}: {len(diffs)} artifact(s) differ from {o.baseline}:\n"
                + "\n".join(cap_lines(f"  {r.step}/{r.task}.{r.name}: {r.detail}" for r in diffs))
                + (f"\nnote: {o.comparison.code_note()}" if o.comparison.code_changed else "")
            )


class ReplayItem(_ReproItem):
    """``--repro-on docker|batch``: the run, replayed there from the store alone, gives the same results."""

    def runtest(self):
        o = self.outcome()
        if o.replay is not None and o.replay.executor is not None:
            self.user_properties.append(("repro_replay_executor", str(o.replay.executor.kind)))
        lines = replay_problems(o)
        if lines:
            raise ReproFailure(f"{o.flow}: " + "\n  ".join(cap_lines(lines, indent="")))
