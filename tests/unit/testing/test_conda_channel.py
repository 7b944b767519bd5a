"""The test channel's wheel -> conda package step (``metaflow_repro.testing.conda_channel.wheel_package``), on
wheels made here: where the files go, which are left out, the console scripts, and ``depends``."""

import zipfile

import pytest

from metaflow_repro.testing.conda_channel import Meta, wheel_package

DIST = "demo_pkg-1.2.dist-info"


def make_wheel(folder, name, *, purelib=True, requires_python="", entry_points="", extra=()):
    """A wheel with a module, a .data folder, a directory entry and an INSTALLER of its own."""
    metadata = "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.2\nRequires-Dist: six>=1.0\n"
    metadata += "Requires-Dist: pywin32; sys_platform == 'win32'\n"
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    path = folder / name

    def put(zf, member, data, mode=0):
        """Unix mode 0: a member made without Unix permissions (only the MS-DOS archive bit, as
        Windows tools write them): the package gets 0o644."""
        info = zipfile.ZipInfo(member)
        info.external_attr = mode << 16 | 0x20
        zf.writestr(info, data)

    with zipfile.ZipFile(path, "w") as zf:
        put(zf, "demo/", b"")
        put(zf, "demo/tool.py", b"print('tool')\n", 0o755)
        put(zf, "demo/__init__.py", b"x = 1\n")
        put(zf, "demo_pkg-1.2.data/purelib/demo_extra.py", b"y = 2\n")
        put(zf, "demo_pkg-1.2.data/platlib/demo_native.py", b"z = 3\n", 0o600)
        put(zf, "demo_pkg-1.2.data/scripts/demo-script", b"#!python\n")
        put(zf, "demo_pkg-1.2.data/purelib", b"odd: a file named like the folder\n")
        put(zf, f"{DIST}/METADATA", metadata)
        put(zf, f"{DIST}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: {str(purelib).lower()}\n")
        put(zf, f"{DIST}/INSTALLER", b"pip\n")
        if entry_points:
            put(zf, f"{DIST}/entry_points.txt", entry_points)
        for member, data in extra:
            put(zf, member, data)
    return path


def test_a_pure_wheel_is_a_noarch_python_package_with_its_files_under_site_packages(tmp_path):
    wheel = make_wheel(tmp_path, "demo_pkg-1.2-py3-none-any.whl")
    meta, entries = wheel_package(wheel, "3.11.7")
    assert meta == Meta("demo-pkg", "1.2", "pyh_repro_0", "noarch", ["six >=1.0", "python"], "python", [])
    assert [(e.path, e.data, e.mode) for e in entries] == [
        ("site-packages/demo/tool.py", b"print('tool')\n", 0o755),
        ("site-packages/demo/__init__.py", b"x = 1\n", 0o644),
        ("site-packages/demo_extra.py", b"y = 2\n", 0o644),
        ("site-packages/demo_native.py", b"z = 3\n", 0o600),
        (f"site-packages/{DIST}/METADATA", entries[4].data, 0o644),
        (f"site-packages/{DIST}/WHEEL", entries[5].data, 0o644),
        (f"site-packages/{DIST}/INSTALLER", b"conda\n", 0o644),
    ]


def test_requires_python_becomes_a_conda_spec_on_python(tmp_path):
    wheel = make_wheel(tmp_path, "demo_pkg-1.2-py3-none-any.whl", requires_python=" >=3.8 ")
    meta, _ = wheel_package(wheel, "3.11.7")
    assert meta.depends == ["six >=1.0", "python >=3.8"]


@pytest.mark.parametrize(
    "name,purelib", [("demo_pkg-1.2-cp311-cp311-linux_x86_64.whl", False), ("demo_pkg-1.2-py3-none-linux.whl", True)]
)
def test_a_platform_wheel_is_a_linux_package_for_one_python_minor(tmp_path, name, purelib):
    wheel = make_wheel(tmp_path, name, purelib=purelib, requires_python=">=3.8")
    meta, entries = wheel_package(wheel, "3.11.7")
    assert meta == Meta("demo-pkg", "1.2", "py311_repro_0", "linux-64", ["six >=1.0", "python >=3.11,<3.12"])
    assert {e.path.split("/site-packages/")[0] for e in entries} == {"lib/python3.11"}


def test_console_scripts_are_the_packages_entry_points(tmp_path):
    text = "[gui_scripts]\ngui = demo:gui\n[console_scripts]\n  demo = demo.cli:main \nnot an entry\n\n"
    text += "other=demo:other\n[demo.plugins]\nplug = demo:plug\n"
    wheel = make_wheel(tmp_path, "demo_pkg-1.2-py3-none-any.whl", entry_points=text)
    meta, entries = wheel_package(wheel, "3.11.7")
    assert meta.entry_points == ["demo = demo.cli:main", "other = demo:other"]
    assert f"site-packages/{DIST}/entry_points.txt" in [e.path for e in entries]
