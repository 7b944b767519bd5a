"""Merging and validation of declarations (pure logic, no I/O)."""

import pytest

from metaflow_repro.errors import SpecError
from metaflow_repro.model.spec import Declaration, merge, pin_of

FLOW = "MyFlow (flow.py)"


def spec(base=(), own=(), source="pypi", s3=False, step="b"):
    return merge(FLOW, step, list(base), list(own), default_python="3.11.7", conda_source=source, s3_datastore=s3)


def test_step_libraries_override_base_by_name_and_keep_the_rest():
    s = spec(
        [Declaration("conda", {"numpy": "1.26.4", "pandas": "2.2.3"}, python="3.11")],
        [Declaration("conda", {"numpy": "2.1.3"})],
    )
    assert dict(s.libraries) == {"numpy": "2.1.3", "pandas": "2.2.3"}
    assert s.python == "3.11"


def test_step_without_decorator_gets_the_base_spec():
    base = [Declaration("conda", {"numpy": "1.26.4"}, python="3.11")]
    a, end = spec(base, step="a"), spec(base, step="end")
    assert dict(a.libraries) == {"numpy": "1.26.4"}
    assert a.spec_id == end.spec_id  # same declaration, same id, whatever the step is called


def test_step_python_and_disabled_override_base():
    s = spec(
        [Declaration("conda", {}, python="3.11", disabled=True)],
        [Declaration("conda", {}, python="3.10", disabled=False)],
    )
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


@pytest.mark.parametrize(
    "version",
    [
        ">=1.0",
        "1.*",
        "1.0.*",
        "~=1.0",
        "1.0,<2",
        "<2",
        "!=1.0",
        "==1.*",
        "1.0; python_version>'3'",
        "== 1.0 , <2",
        ">1",
        "=1.0",
    ],
)
def test_range_and_wildcard_versions_are_refused_as_ranges(version):
    """Pins the range/wildcard check itself: each of these is refused *as a range or wildcard*,
    with its own wording (not merely as an invalid version, which a missing check would give)."""
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {"pandas": version})])
    msg = str(err.value)
    assert "MyFlow" in msg and "step 'b'" in msg and "'pandas'" in msg
    assert f"is not pinned to one exact version ({version!r} is a range or wildcard)" in msg, msg
    assert "not a valid version" not in msg


@pytest.mark.parametrize(
    "version,words",
    [
        ("", "is not pinned (empty version)"),
        ("  ", "is not pinned (empty version)"),
        ("==", "is not pinned (empty version)"),
        ("latest", "'latest', which is not a valid version"),
        ("1.0-beta-x", "which is not a valid version"),
    ],
)
def test_unpinned_or_invalid_versions_are_refused_with_their_own_reason(version, words):
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {"pandas": version})])
    msg = str(err.value)
    assert "MyFlow" in msg and "step 'b'" in msg and words in msg and "range or wildcard" not in msg
    assert "write an exact version, e.g. {'pandas': '1.2.3'}" in msg


@pytest.mark.parametrize(
    "version,exact",
    [("1.0", "1.0"), ("==2.2.3", "2.2.3"), (" == 2.2.3 ", "2.2.3"), ("1.0.post1", "1.0.post1"), ("2.0rc1", "2.0rc1")],
)
def test_exact_versions_are_accepted_and_normalised(version, exact):
    assert pin_of("Pandas_Lib", version, "here") == ("pandas-lib", exact)


@pytest.mark.parametrize("version", [None, 1.0, 2])
def test_non_string_versions_are_refused(version):
    with pytest.raises(SpecError, match="'pandas'.*must be strings"):
        pin_of("pandas", version, "here")


@pytest.mark.parametrize(
    "python,match",
    [
        ("3.6", "Metaflow 2.19 needs"),
        ("3.6.15", "Metaflow 2.19 needs"),
        (3.10, "must be a string"),
        ("python3", "not a Python version"),
        ("2.7", "not a Python version"),
    ],
)
def test_bad_python_values_are_refused(python, match):
    with pytest.raises(SpecError, match=match):
        spec(own=[Declaration("conda", {}, python=python)])


@pytest.mark.parametrize(
    "decl,match",
    [
        (Declaration("conda", ["numpy==1.0"]), "must be a dict"),
        (Declaration("conda", {"numpy": "1.0"}, disabled="yes"), "disabled='yes' must be True or False"),
        (Declaration("conda", {"not a name!": "1.0"}), "not a valid package name"),
        (Declaration("conda", {"pandas[parquet]": "2.2.3"}), "extras are not supported"),
        (Declaration("conda", {"numpy": "1.0"}, channels=5), "channels=5"),
    ],
)
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


# -- more of merge's rules, each with its exact wording (pure) -----------------------------------


def test_flow_level_decorators_of_both_kinds_or_twice_are_refused_at_flow_level():
    with pytest.raises(SpecError) as err:
        spec([Declaration("conda", {}), Declaration("pypi", {})])
    assert str(err.value) == (
        "flow MyFlow (flow.py) (flow-level decorator): @conda_base and @pypi_base cannot "
        "both be used on the same flow; choose one"
    )
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("pypi", {}), Declaration("pypi", {})])
    assert str(err.value) == "flow MyFlow (flow.py), step 'b': @pypi is applied more than once"
    with pytest.raises(
        SpecError,
        match=r"^flow MyFlow \(flow.py\), step 'b': @conda and @pypi cannot both be used "
        r"on the same step; choose one$",
    ):
        spec(own=[Declaration("pypi", {}), Declaration("conda", {})])


def test_a_library_declared_twice_must_agree():
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("pypi", {"Numpy": "1.0", "numpy": "2.0"})])
    assert str(err.value) == (
        "flow MyFlow (flow.py), step 'b': library 'numpy' is declared twice with different versions (1.0 and 2.0)"
    )
    assert dict(spec(own=[Declaration("pypi", {"Numpy": "1.0", "numpy": "==1.0"})]).libraries) == {"numpy": "1.0"}


def test_errors_in_the_base_decorator_name_the_flow_level():
    with pytest.raises(SpecError) as err:
        spec([Declaration("pypi", {"numpy": ">1"})])
    assert str(err.value).startswith("flow MyFlow (flow.py) (flow-level decorator): library 'numpy' is not pinned")
    with pytest.raises(SpecError, match=r"^flow MyFlow \(flow.py\) \(flow-level decorator\): python='2.7'"):
        spec([Declaration("pypi", {}, python="2.7")])
    with pytest.raises(SpecError, match=r"^flow MyFlow \(flow.py\) \(flow-level decorator\): disabled=1 must"):
        spec([Declaration("pypi", {}, disabled=1)])
    with pytest.raises(SpecError, match=r"^flow MyFlow \(flow.py\) \(flow-level decorator\): channels=\[''\]"):
        spec([Declaration("conda", {}, channels=[""])])


def test_the_whole_spec_of_a_merged_step():
    s = spec(
        [Declaration("conda", {"numpy": "1.26.4", "six": "1.16.0"}, python=" 3.10 ", channels="conda-forge")],
        [Declaration("conda", {"six": "1.17.0"}, disabled=False)],
        s3=True,
    )
    assert (s.flow, s.step, s.kind, s.source, s.python, s.disabled) == (FLOW, "b", "conda", "pypi", "3.10", False)
    assert s.libraries == (("numpy", "1.26.4"), ("six", "1.17.0"))
    assert s.implicit == (("boto3", "1.35.99"), ("requests", "2.32.3"))
    assert s.channels == ("conda-forge",) and s.where == "flow MyFlow (flow.py), step 'b'"
    assert list(s.requirements) == ["boto3", "numpy", "requests", "six"]
    # the step's own channels replace the base's; none keeps the base's
    assert spec(
        [Declaration("conda", {}, channels=["a"])], [Declaration("conda", {}, channels=("b", "c"))]
    ).channels == ("b", "c")
    assert spec([Declaration("conda", {}, channels=["a"])], [Declaration("conda", {})]).channels == ("a",)


def test_a_disabled_step_keeps_its_declaration_but_adds_nothing():
    s = spec(
        [Declaration("pypi", {"six": "1.16.0"}, python="3.9", disabled=True)], [Declaration("pypi", {"idna": "3.10"})]
    )
    assert (s.kind, s.source, s.python, s.disabled, s.implicit) == ("pypi", "none", "3.9", True, ())
    assert s.libraries == (("idna", "3.10"), ("six", "1.16.0")) and s.where == "flow MyFlow (flow.py), step 'b'"
    assert spec([Declaration("pypi", {}, disabled=True)], [Declaration("pypi", {}, disabled=None)]).disabled
    # disabled needs no conda source at all
    assert spec(own=[Declaration("conda", {"six": "1.16.0"}, disabled=True)], source=None).disabled


def test_no_decorator_at_all():
    s = spec()
    assert (s.kind, s.source, s.libraries, s.channels, s.disabled) == ("none", "pypi", (), (), False)
    assert s.python == "3.11.7" and s.where == "flow MyFlow (flow.py), step 'b'"


@pytest.mark.parametrize(
    "python,requests,boto3",
    [
        ("3.7", "2.31.0", "1.33.13"),
        ("3.7.16", "2.31.0", "1.33.13"),
        ("3.8", "2.32.3", "1.35.99"),
        ("3.13.0", "2.32.3", "1.35.99"),
    ],
)
def test_implicit_pins_per_python_line(python, requests, boto3):
    from metaflow_repro.model.spec import implicit_needs

    assert implicit_needs(python, False) == {"requests": requests}
    assert implicit_needs(python, True) == {"requests": requests, "boto3": boto3}


@pytest.mark.parametrize("python", ["3.7", "3.7.0", "3.13", "3.12.1", " 3.9 "])
def test_supported_python_values(python):
    assert spec(own=[Declaration("pypi", {}, python=python)]).python == python.strip()


@pytest.mark.parametrize(
    "python,words",
    [
        (True, "python=True is not a Python version such as '3.11', '3.11.7', '3.11.*' or '>=3.10,<3.12'"),
        (3, "python=3 must be a string such as '3.10' (a number loses digits: 3.10 == 3.1)"),
        (
            "3.6",
            "python='3.6' is not supported: Metaflow 2.19 needs Python 3.7 or newer inside a step; "
            "choose python='3.7' or later",
        ),
        ("3", "python='3' is not a Python version"),
        ("3.11.7.1", "is not a Python version"),
        ("4.0", "is not a Python version"),
    ],
)
def test_unsupported_python_values_with_their_wording(python, words):
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("pypi", {}, python=python)])
    assert str(err.value) == f"flow MyFlow (flow.py), step 'b': {words}" or words in str(err.value)
    assert str(err.value).startswith("flow MyFlow (flow.py), step 'b': python=")


@pytest.mark.parametrize(
    "value,words", [("yes", "disabled='yes' must be True or False"), (0, "disabled=0 must be True or False")]
)
def test_disabled_must_be_a_bool(value, words):
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("pypi", {}, disabled=value)])
    assert str(err.value) == f"flow MyFlow (flow.py), step 'b': {words}"


@pytest.mark.parametrize("value", [5, ["ok", 3], [""], {"a": 1}])
def test_channels_must_be_names(value):
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {}, channels=value)])
    assert (
        str(err.value) == f"flow MyFlow (flow.py), step 'b': channels={value!r} must be a list of channel names or URLs"
    )


def test_libraries_must_be_a_dict_with_the_decorators_own_keyword():
    for kind, key in (("pypi", "packages"), ("conda", "libraries")):
        with pytest.raises(SpecError) as err:
            spec(own=[Declaration(kind, ["six==1.0"])])
        assert str(err.value) == (
            f"flow MyFlow (flow.py), step 'b': @{kind}({key}=...) must be a dict of "
            "{'name': 'exact version'}, got list ['six==1.0']"
        )


@pytest.mark.parametrize(
    "name,words",
    [
        (
            "pandas[parquet]",
            "library 'pandas[parquet]': extras are not supported; declare the extra's packages "
            "explicitly with exact versions",
        ),
        ("not a name", "'not a name' is not a valid package name"),
        ("-x", "'-x' is not a valid package name"),
        (5, "5 is not a valid package name"),
    ],
)
def test_bad_names_with_their_wording(name, words):
    with pytest.raises(SpecError) as err:
        pin_of(name, "1.0", "here")
    assert str(err.value) == f"here: {words}"


def test_pin_messages_in_full():
    with pytest.raises(SpecError) as err:
        pin_of("six", 1.0, "here")
    assert str(err.value) == (
        "here: library 'six' has version 1.0; versions must be strings pinned to one exact "
        "version: write an exact version, e.g. {'six': '1.2.3'}"
    )
    with pytest.raises(SpecError) as err:
        pin_of("six", "", "here")
    assert str(err.value) == (
        "here: library 'six' is not pinned (empty version); write an exact version, e.g. "
        "{'six': '1.2.3'}. repro refuses unpinned libraries because the result could not be "
        "reproduced."
    )
    with pytest.raises(SpecError) as err:
        pin_of("six", "abc", "here")
    assert str(err.value) == (
        "here: library 'six' has version 'abc', which is not a valid version; write an exact "
        "version, e.g. {'six': '1.2.3'}"
    )
    assert pin_of(" Six ", "1.0", "here") == ("six", "1.0") and pin_of("a", "1", "here") == ("a", "1")


def test_ids_are_stable_across_releases():
    """spec_id is written into every committed lock: a change to how it is computed makes every
    lock stale, so it is pinned here (change it only on purpose, with a lock format note)."""
    import hashlib

    from metaflow_repro.model.spec import sha256_json

    assert sha256_json({"b": [1, "x"], "a": None}) == hashlib.sha256(b'{"a":null,"b":[1,"x"]}').hexdigest()
    s = spec(own=[Declaration("pypi", {"six": "1.16.0"})])
    payload = (
        b'{"channels":[],"disabled":false,"implicit":[["requests","2.32.3"]],"kind":"pypi",'
        b'"libraries":[["six","1.16.0"]],"python":"3.11.7","source":"pypi"}'
    )
    assert s.spec_id == hashlib.sha256(payload).hexdigest()


def test_disabled_spec_in_full_and_the_conda_source_message_in_full():
    s = spec([Declaration("conda", {"six": "1.16.0"}, channels=["conda-forge"], disabled=True)], step="c")
    assert s == type(s)(
        flow=FLOW,
        step="c",
        kind="conda",
        source="none",
        python="3.11.7",
        libraries=(("six", "1.16.0"),),
        implicit=(),
        channels=("conda-forge",),
        disabled=True,
    )
    with pytest.raises(SpecError) as err:
        spec(own=[Declaration("conda", {"numpy": "1.26.4"})], source=None)
    assert str(err.value) == (
        "flow MyFlow (flow.py), step 'b': @conda libraries need a conda-source: set conda-source = \"conda\" "
        '(packages from conda channels) or conda-source = "pypi" (the same names served from PyPI) under '
        "[tool.repro] in pyproject.toml, or REPRO_CONDA_SOURCE=conda or REPRO_CONDA_SOURCE=pypi in the environment."
    )


def test_conda_source_conda_takes_the_decorators_channels_else_the_settings_channels():
    def conda_spec(decl, default_channels=("conda-forge",), step="b"):
        return merge(FLOW, step, [], list(decl), "3.11.7", conda_source="conda", default_channels=default_channels)

    s = conda_spec([Declaration("conda", {"six": "1.16.0"})], default_channels=("./channel", "conda-forge"))
    assert (s.source, s.channels) == ("conda", ("./channel", "conda-forge"))
    s = conda_spec([Declaration("conda", {"six": "1.16.0"}, channels=["bioconda"])])
    assert (s.source, s.channels) == ("conda", ("bioconda",))
    # a step without a decorator gets the bare env (python + Metaflow's needs) from the channels too
    bare = conda_spec([])
    assert (bare.source, bare.kind, bare.channels, bare.libraries) == ("conda", "none", ("conda-forge",), ())
    assert dict(bare.implicit) == {"requests": "2.32.3"}
    # @pypi stays on PyPI, and with conda-source = "pypi" a step mixing @pypi with @conda_base is all PyPI
    assert conda_spec([Declaration("pypi", {"six": "1.16.0"})]).source == "pypi"
    on_pypi = merge(
        FLOW,
        "b",
        [Declaration("conda", {"six": "1.16.0"})],
        [Declaration("pypi", {"idna": "3.10"})],
        "3.11.7",
        conda_source="pypi",
    )
    assert (on_pypi.source, on_pypi.pip, dict(on_pypi.libraries)) == ("pypi", (), {"six": "1.16.0", "idna": "3.10"})
    with pytest.raises(SpecError, match="needs at least one conda channel"):
        conda_spec([Declaration("conda", {"six": "1.16.0"})], default_channels=())


def test_pypi_mixed_into_conda_goes_on_top_of_the_conda_env():
    base, own = [Declaration("conda", {"six": "1.16.0"})], [Declaration("pypi", {"idna": "3.10"}, python="3.12")]
    s = merge(FLOW, "b", base, own, "3.11.7", conda_source="conda", default_channels=("conda-forge",))
    assert (s.source, s.kind, s.libraries, s.pip, s.python) == (
        "conda",
        "conda",
        (("six", "1.16.0"),),
        (("idna", "3.10"),),
        "3.12",
    )
    assert s.channels == ("conda-forge",)
    plain = merge(FLOW, "b", base, [], "3.11.7", conda_source="conda", default_channels=("conda-forge",))
    assert plain.spec_id != s.spec_id and plain.pip == ()
    # and the reverse: @pypi_base with a step's @conda
    r = merge(
        FLOW,
        "b",
        [Declaration("pypi", {"idna": "3.10"})],
        [Declaration("conda", {"six": "1.16.0"})],
        "3.11.7",
        conda_source="conda",
        default_channels=("conda-forge",),
    )
    assert (r.libraries, r.pip) == ((("six", "1.16.0"),), (("idna", "3.10"),))
    with pytest.raises(SpecError, match="declared both in @conda and in @pypi"):
        merge(
            FLOW,
            "b",
            base,
            [Declaration("pypi", {"six": "1.17.0"})],
            "3.11.7",
            conda_source="conda",
            default_channels=("conda-forge",),
        )


@pytest.mark.parametrize("version", ["1.X", "X", "1.0x"])
def test_letters_are_invalid_versions_not_ranges(version):
    with pytest.raises(SpecError, match="which is not a valid version"):
        pin_of("six", version, "here")


@pytest.mark.parametrize(
    "python,normal",
    [
        ("3.10.*", "==3.10.*"),
        ("==3.10.*", "==3.10.*"),
        (">=3.10,<3.11", "<3.11,>=3.10"),
        ("<3.11, >=3.10", "<3.11,>=3.10"),
    ],
)
def test_pep440_python_specifiers_are_accepted_in_one_spelling(python, normal):
    s = spec(own=[Declaration("pypi", {}, python=python)])
    assert s.python == normal
    assert s.spec_id == spec(own=[Declaration("pypi", {}, python=normal)]).spec_id


def test_python_specifiers_select_the_versions_they_admit():
    from metaflow_repro.model.spec import python_is_exact, python_matches, python_minor

    assert python_matches("3.10.14", "==3.10.*") and not python_matches("3.11.7", "==3.10.*")
    assert python_matches("3.10.0", "<3.11,>=3.10") and not python_matches("3.9.18", "<3.11,>=3.10")
    assert python_matches("3.11.7", "3.11") and not python_matches("3.11.7", "3.11.3")
    assert python_is_exact("3.11.3") and python_is_exact("==3.11.3")
    assert not python_is_exact("==3.11.*") and not python_is_exact(">=3.11.3")
    assert python_minor(">=3.7,<3.9") == (3, 7) and python_minor("==3.12.*") == (3, 12)
    # the implicit pins follow the oldest line the specifier admits
    assert spec([Declaration("pypi", {}, python=">=3.7,<3.9")]).requirements == {"requests": "2.31.0"}


@pytest.mark.parametrize(
    "python,match", [("<3.7", "Metaflow 2.19 needs"), ("==4.*", "admits no Python 3"), ("3.*.1", "not a Python")]
)
def test_specifiers_that_select_no_usable_python_are_refused(python, match):
    with pytest.raises(SpecError, match=match):
        spec(own=[Declaration("pypi", {}, python=python)])


def test_when_pypi_is_mixed_into_conda_the_pypi_side_is_read_first():
    """With conda-source "conda", the @pypi level's packages are read before the rest is validated:
    of two bad levels, the @pypi one is reported; a step that turns itself off is not mixed at all."""
    base, own = [Declaration("conda", {"six": ">1"})], [Declaration("pypi", {"idna": ">2"})]
    with pytest.raises(SpecError, match=r"^flow MyFlow \(flow.py\), step 'b': library 'idna'"):
        merge(FLOW, "b", base, own, "3.11.7", conda_source="conda", default_channels=("conda-forge",))
    with pytest.raises(SpecError, match=r"^flow MyFlow \(flow.py\) \(flow-level decorator\): library 'six'"):
        merge(FLOW, "b", base, own, "3.11.7", conda_source="pypi")
    off = [Declaration("pypi", {"idna": "3.10"}, disabled=True)]
    s = merge(FLOW, "b", [Declaration("conda", {"six": "1.16.0"})], off, "3.11.7", conda_source="conda")
    assert (s.kind, s.source, s.pip, s.libraries) == ("pypi", "none", (), (("idna", "3.10"), ("six", "1.16.0")))
