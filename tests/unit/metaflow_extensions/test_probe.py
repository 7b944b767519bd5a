"""A distribution's fingerprint (probe._record / record_digest): the installer's cache file is left out, on
the host and in a Batch job alike."""

from __future__ import annotations

from metaflow_extensions.repro.plugins import probe


def _dist(site, record_lines):
    info = site / "six-1.16.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "RECORD").write_text("\n".join(record_lines) + "\n")
    return str(info)


def test_a_distributions_fingerprint_leaves_out_the_installers_cache_file(tmp_path):
    """uv's uv_cache.json holds the source file's ctime: two installs of one lock from the same
    verified files must still fingerprint the same; any other line of RECORD still counts."""
    base = ["six.py,sha256=abc,100", "six-1.16.0.dist-info/RECORD,,"]
    one = probe._record(
        str(tmp_path / "a"), _dist(tmp_path / "a", [*base, "six-1.16.0.dist-info/uv_cache.json,sha256=x,127"]), True
    )
    two = probe._record(
        str(tmp_path / "b"), _dist(tmp_path / "b", [*base, "six-1.16.0.dist-info/uv_cache.json,sha256=y,125"]), True
    )
    assert one == two
    other = probe._record(str(tmp_path / "c"), _dist(tmp_path / "c", ["six.py,sha256=abd,100", base[1]]), True)
    assert other[0] != one[0]
    # a package's own file of that name is not the installer's
    own = probe._record(str(tmp_path / "d"), _dist(tmp_path / "d", [*base, "six/uv_cache.json,sha256=x,127"]), True)
    assert own[0] != one[0] and own[1] == one[1] + 1


def test_the_job_and_the_host_take_a_record_files_digest_the_same_way(tmp_path):
    """batch_bootstrap.record_digest runs on its own in a job (it cannot import probe): its rule must stay
    the fingerprint's (uv's cache file lines left out), or every cached env would be refused."""
    from metaflow_extensions.repro.plugins import batch_bootstrap

    site = tmp_path / "site"
    info = site / "six-1.16.0.dist-info"
    info.mkdir(parents=True)
    (site / "six.py").write_text("x = 1\n")
    blob = b"six.py,sha256=abc,6\nsix-1.16.0.dist-info/uv_cache.json,sha256=def,120\nsix-1.16.0.dist-info/RECORD,,\n"
    (info / "RECORD").write_bytes(blob)
    other = blob.replace(b"sha256=def,120", b"sha256=xyz,121")  # another install's cache file
    digest = probe._record(str(site), str(info))[0]
    assert batch_bootstrap.record_digest(blob) == probe.record_digest(blob) == digest
    assert batch_bootstrap.record_digest(other) == digest
    assert batch_bootstrap.record_digest(blob.replace(b"sha256=abc", b"sha256=abd")) != digest
