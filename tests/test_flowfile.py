"""Loading flow files the way Metaflow does, and refusing the ones that cannot load."""

import pytest

from metaflow_repro.env.engine import open_flow
from metaflow_repro.errors import FlowLoadError
from tests.helpers import SCENARIOS, write_flow


def test_seed_base_override_flow_merges_as_the_documentation_says():
    flow = open_flow(SCENARIOS / "base_override.py")
    s = flow.specs
    assert flow.name == "BaseOverrideFlow" and list(s) == ["start", "a", "b", "c", "end"]
    assert dict(s["a"].libraries) == {"numpy": "1.26.4"} and s["a"].python == "3.11"
    assert dict(s["b"].libraries) == {"numpy": "2.1.3"} and s["b"].python == "3.11"
    assert s["c"].disabled and not s["a"].disabled
    assert s["start"].spec_id == s["a"].spec_id == s["end"].spec_id != s["b"].spec_id


def test_computed_decorator_values_work_because_the_flow_is_imported(flow_dir):
    path = write_flow(
        flow_dir,
        """
        import platform
        from metaflow import FlowSpec, step, pypi_base

        def get_python_version():
            return ".".join(platform.python_version_tuple()[:2])

        @pypi_base(packages={"six": "1.16.0"}, python=get_python_version())
        class ComputedFlow(FlowSpec):
            @step
            def start(self):
                self.next(self.end)

            @step
            def end(self):
                pass
    """,
    )
    import platform

    flow = open_flow(path)
    assert flow.specs["start"].python == ".".join(platform.python_version_tuple()[:2])


def test_a_flow_that_does_not_import_names_the_file_and_the_error(flow_dir):
    path = write_flow(
        flow_dir,
        """
        from metaflow import FlowSpec, step
        import no_such_module_anywhere
    """,
    )
    with pytest.raises(FlowLoadError) as err:
        open_flow(path)
    msg = str(err.value)
    assert str(path) in msg and "does not import" in msg and "no_such_module_anywhere" in msg


def test_a_file_without_a_flow_is_refused(flow_dir):
    path = write_flow(flow_dir, "x = 1\n")
    with pytest.raises(FlowLoadError, match="no Metaflow flow found"):
        open_flow(path)


def test_an_edited_flow_is_read_afresh(flow_dir):
    body = """
        from metaflow import FlowSpec, step, pypi
        class EditFlow(FlowSpec):
            @pypi(packages={"six": "%s"})
            @step
            def start(self):
                self.next(self.end)
            @step
            def end(self):
                pass
    """
    path = write_flow(flow_dir, body % "1.16.0")
    assert dict(open_flow(path).specs["start"].libraries) == {"six": "1.16.0"}
    write_flow(flow_dir, body % "1.17.0")
    assert dict(open_flow(path).specs["start"].libraries) == {"six": "1.17.0"}
