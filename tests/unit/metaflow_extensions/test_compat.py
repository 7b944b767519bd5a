"""metaflow_extensions/repro/plugins/compat.py: which Metaflow releases take USER_CONTENT from
``add_to_package`` (2.19.24 on), and what the environment hands Metaflow on either side of it."""

import pytest
from metaflow.packaging_sys import ContentType

from metaflow_extensions.repro.plugins import compat


@pytest.mark.parametrize(
    "text, expected",
    [("2.16.0", (2, 16, 0)), ("2.19.24", (2, 19, 24)), ("2.19.39.post3+git1a2b", (2, 19, 39)), ("2.17", (2, 17, 0))],
)
def test_release_reads_major_minor_patch(text, expected):
    assert compat.release(text) == expected


@pytest.mark.parametrize(
    "version, takes", [("2.16.8", False), ("2.19.0", False), ("2.19.23", False), ("2.19.24", True), ("2.19.39", True)]
)
def test_user_content_from_add_to_package_since_2_19_24(version, takes):
    assert compat.takes_user_content(version) is takes


def test_this_metaflow_gets_the_lock_as_its_release_takes_it(tmp_path):
    lock = tmp_path / "flow.repro.lock"
    lock.write_text("x")

    class Env:
        pass

    env = Env()
    out = compat.add_user_content(env, [(str(lock), lock.name)])
    if compat.takes_user_content():
        assert out == [(str(lock), lock.name, ContentType.USER_CONTENT)]
    else:  # older Metaflow: the package's walk of the flow's folder yields it
        from metaflow.package import MetaflowPackage

        assert out == [] and env._repro_user_content == [(str(lock), lock.name)]
        assert getattr(MetaflowPackage._user_code_tuples, "_repro_compat", False)
