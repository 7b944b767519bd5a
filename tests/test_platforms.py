from metaflow_repro.model import platforms as plats

FILES = [
    "charset_normalizer-3.5.3-py3-none-any.whl",
    "charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
    "charset_normalizer-3.5.3-cp311-cp311-macosx_10_9_universal2.whl",
    "charset_normalizer-3.5.3-cp311-cp311-win_amd64.whl",
]


def test_installer_preference_picks_the_most_specific_compatible_wheel():
    assert "manylinux" in plats.best_wheel(FILES, plats.get("linux-64"), "3.11.7")
    assert "universal2" in plats.best_wheel(FILES, plats.get("osx-arm64"), "3.11.7")
    assert plats.best_wheel(FILES, plats.get("win-64"), "3.11.7").endswith("win_amd64.whl")
    assert plats.best_wheel(FILES[:1], plats.get("linux-aarch64"), "3.7.16") == FILES[0]
    assert plats.best_wheel(["x-1.0-cp312-cp312-win_amd64.whl"], plats.get("linux-64"), "3.12.1") is None


def test_unknown_platform_names_the_known_ones():
    import pytest

    from metaflow_repro.errors import BadInput

    with pytest.raises(BadInput, match="known platforms: linux-64"):
        plats.get("linux-32")
