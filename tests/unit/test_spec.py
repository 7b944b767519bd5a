"""Merging and validation of declarations (pure logic, no I/O)."""

import pytest

from repro.errors import SpecError
from repro.model.spec import Declaration, merge, pin_of

FLOW = "MyFlow (flow.py)"


def spec(base=(), own=(), source="pypi", s3=False, step="b"):
    return merge(FLOW, step, list(base), list(own), default_python="3.11.7", conda_source=source, s3_datastore=s3)


def test_step_libraries_override_base_by_name_and_keep_the_rest():
    s = spec([Declaration("conda", {"numpy": "1.26.4", "pandas": "2.2.3"}, python="3.11")],
             [Declaration("conda", {"numpy": "2.1.3"})])
    assert dict(s.libraries) == {"numpy": "2.1.3", "pandas": "2.2.3"}
    assert s.python == "3.11"


def test_step_without_decorator_gets_the_base_spec():
    base = [Declaration("conda", {"numpy": "1.26.4"}, python="3.11")]
    a, end = spec(base, step="a"), spec(base, step="end")
    assert dict(a.libraries) == {"numpy": "1.26.4"}
    assert a.spec_id == end.spec_id  # same declaration, same id, whatever the step is called


def test_step_python_and_disabled_override_base():
    s = spec([Declaration("conda", {}, python="3.11", disabled=True)], [Declaration("conda", {}, python="3.10", disabled=False)])
    assert (s.python, s.disabled) == ("3.10", False)
    c = spec([Declaration("conda", {"numpy": "1.26.4"})], [Declaration("conda", disabled=True)])
    assert c.disabled and c.source == "none" and c.implicit == ()


def test_no_python_means_the_running_interpreter():
    assert spec().python == "3.11.7"


def test_metaflow_runtime_needs_are_implicit_pinned_and_user_pins_win():
    assert dict(spec().implicit) == {"requests": "2.32.3"}
    assert dict(spec(s3=True).implicit) == {"requests": "2.32.3", "boto3": "1.35.99"}
    assert spec([Declaration("pypi", {}, python="3.7")]).requirements == {"requests": "2.31.0"}
    assert spec(own=[Declaration("pypi", {"requests": "2.28.0"})]).requirements == {"requests": "2.28.0"}


def test_names_are_normalised_so_overrides_match():
    s = spec([Declaration("pypi", {"Scikit_Learn": "1.5.2"})], [Declaration("pypi", {"scikit-learn": "1.5.1"})])
    assert dict(s.libraries) == {"scikit-learn": "1.5.1"}


def test_spec_id_changes_with_the_declaration():
    a = spec(own=[Declaration("pypi", {"six": "1.16.0"})])
    b = spec(own=[Declaration("pypi", {"six": "1.17.0"})])
    assert a.spec_id != b.spec_id and a.spec_id == spec(own=[Declaration("pypi", {"six": "==1.16.0"})]).spec_id


@pytest.mark.parametrize("version", [">=1.0", "1.*", "1.0.*", "~=1.0", "1.0,<2", "<2", "!=1.0", "==1.*", "1.0; python_version>'3'",
                                     "== 1.0 , <2", ">1", "=1.0"])
def test_range_and_wildcard_versions_are_refused_as_ranges(version):
    """Pins the range/wildcard check itself: each of these is refused *as a range or wildcard*,
    with its own wording (not merely as an invalid version, which a missing check would give)."""
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {"pandas": version})])
    msg = str(err.value)
    assert "MyFlow" in msg and "step 'b'" in msg and "'pandas'" in msg
    assert f"is not pinned to one exact version ({version!r} is a range or wildcard)" in msg, msg
    assert "not a valid version" not in msg


@pytest.mark.parametrize("version,words", [("", "is not pinned (empty version)"), ("  ", "is not pinned (empty version)"),
                                           ("==", "is not pinned (empty version)"),
                                           ("latest", "'latest', which is not a valid version"),
                                           ("1.0-beta-x", "which is not a valid version")])
def test_unpinned_or_invalid_versions_are_refused_with_their_own_reason(version, words):
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {"pandas": version})])
    msg = str(err.value)
    assert "MyFlow" in msg and "step 'b'" in msg and words in msg and "range or wildcard" not in msg
    assert "write an exact version, e.g. {'pandas': '1.2.3'}" in msg


@pytest.mark.parametrize("version,exact", [("1.0", "1.0"), ("==2.2.3", "2.2.3"), (" == 2.2.3 ", "2.2.3"),
                                           ("1.0.post1", "1.0.post1"), ("2.0rc1", "2.0rc1")])
def test_exact_versions_are_accepted_and_normalised(version, exact):
    assert pin_of("Pandas_Lib", version, "here") == ("pandas-lib", exact)


@pytest.mark.parametrize("version", [None, 1.0, 2])
def test_non_string_versions_are_refused(version):
    with pytest.raises(SpecError, match="'pandas'.*must be strings"):
        pin_of("pandas", version, "here")


@pytest.mark.parametrize("python,match", [("3.6", "Metaflow 2.19 needs"), ("3.6.15", "Metaflow 2.19 needs"),
                                          (3.10, "must be a string"), ("python3", "not a Python version"),
                                          ("2.7", "not a Python version")])
def test_bad_python_values_are_refused(python, match):
    with pytest.raises(SpecError, match=match):
        spec(own=[Declaration("conda", {}, python=python)])


@pytest.mark.parametrize("decl,match", [
    (Declaration("conda", ["numpy==1.0"]), "must be a dict"),
    (Declaration("conda", {"numpy": "1.0"}, disabled="yes"), "disabled='yes' must be True or False"),
    (Declaration("conda", {"not a name!": "1.0"}), "not a valid package name"),
    (Declaration("conda", {"pandas[parquet]": "2.2.3"}), "extras are not supported"),
    (Declaration("conda", {"numpy": "1.0"}, channels=5), "channels=5"),
])
def test_malformed_decorator_arguments_are_refused(decl, match):
    with pytest.raises(SpecError, match=match):
        spec(own=[decl])


def test_conda_without_a_channel_source_says_how_to_serve_it_from_pypi():
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {"numpy": "1.26.4"})], source=None)
    assert 'conda-source = "pypi"' in str(err.value) and "REPRO_CONDA_SOURCE=pypi" in str(err.value)
    # @pypi needs no such setting
    assert spec(own=[Declaration("pypi", {"numpy": "1.26.4"})], source=None).source == "pypi"


def test_conda_and_pypi_on_the_same_step_are_refused():
    with pytest.raises(SpecError, match="@conda and @pypi cannot both be used on the same step"):
        spec(own=[Declaration("conda", {}), Declaration("pypi", {})])
