"""TLS behind an intercepting proxy (issue 10 item 6): the index's certificate is signed by a CA
only the user's settings know. repro trusts, in order, SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip's
cert (PIP_CERT, then pip's configuration files), else the system's store; uv and our downloader get
the same answer, and an error names the one that was used. The index here is a real HTTPS server
on 127.0.0.1 with a certificate from a throw-away CA."""

import os

import pytest

from metaflow_repro.env import tls, uvtool
from metaflow_repro.errors import BadInput
from tests.helpers import TlsIndex, cli, make_tls_ca, write_flow


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    return {"good": make_tls_ca(folder / "good"), "other": make_tls_ca(folder / "other")}


def _pip_conf(path, section="global", cert=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[{section}]\ncert = {cert}\n")
    return path


def _bare(tmp_path, **extra):
    """An environment with no trust settings and no pip configuration but the test's own."""
    return {"HOME": str(tmp_path / "home"), "PIP_CONFIG_FILE": os.devnull, **extra}


@pytest.mark.parametrize(
    "given,expected",
    [
        ({}, "system"),
        ({"PIP_CERT": "pip"}, "PIP_CERT"),
        ({"REQUESTS_CA_BUNDLE": "requests", "PIP_CERT": "pip"}, "REQUESTS_CA_BUNDLE"),
        ({"SSL_CERT_FILE": "ssl", "REQUESTS_CA_BUNDLE": "requests", "PIP_CERT": "pip"}, "SSL_CERT_FILE"),
    ],
)
def test_the_trust_is_the_first_of_ssl_cert_file_requests_ca_bundle_and_pips_cert(tmp_path, given, expected):
    files = {}
    for var, stem in given.items():
        files[var] = tmp_path / f"{stem}.pem"
        files[var].write_text("pem")
    t = tls.trust(_bare(tmp_path, **{var: str(path) for var, path in files.items()}))
    assert t.source == expected
    if expected == "system":
        assert t.cafile is None and t.uv_env() == {"UV_NATIVE_TLS": "1"}
        assert "system's trust store" in t.describe()
    else:
        assert t.uv_env() == {"UV_NATIVE_TLS": "1", "SSL_CERT_FILE": str(files[expected])}
        assert expected in t.describe() and str(files[expected]) in t.describe()


def test_pips_cert_comes_from_its_configuration_files_in_pips_order(tmp_path):
    home = tmp_path / "home"
    user = _pip_conf(home / ".config" / "pip" / "pip.conf", cert=tmp_path / "user.pem")
    (tmp_path / "user.pem").write_text("pem")
    env = {"HOME": str(home), "VIRTUAL_ENV": str(tmp_path / "venv")}
    # the user's file wins over the machine's (/etc/pip.conf and /etc/xdg/pip may name one too)
    assert tls.trust(env) == tls.Trust(f"pip configuration {user} [global] cert", str(tmp_path / "user.pem"))
    # the virtualenv's own file wins over the user's, [install] over [global] in one file
    site = tmp_path / "venv" / "pip.conf"
    site.parent.mkdir()
    site.write_text(f"[install]\ncert = {tmp_path / 'site.pem'}\n[global]\ncert = {tmp_path / 'user.pem'}\n")
    (tmp_path / "site.pem").write_text("pem")
    assert tls.trust(env).cafile == str(tmp_path / "site.pem")
    # PIP_CONFIG_FILE is read last; PIP_CERT beats every file
    env["PIP_CONFIG_FILE"] = str(_pip_conf(tmp_path / "env.conf", cert=tmp_path / "user.pem"))
    assert tls.trust(env).cafile == str(tmp_path / "user.pem")
    assert tls.trust({**env, "PIP_CERT": str(tmp_path / "site.pem")}).source == "PIP_CERT"


def test_a_bundle_that_is_not_a_file_is_bad_input_naming_where_it_was_set(tmp_path):
    with pytest.raises(BadInput, match=r"REQUESTS_CA_BUNDLE names the CA bundle .*nowhere.pem, which is not a file"):
        tls.trust(_bare(tmp_path, REQUESTS_CA_BUNDLE=str(tmp_path / "nowhere.pem")))
    conf = _pip_conf(tmp_path / "pip.conf", cert=tmp_path / "gone.pem")
    with pytest.raises(BadInput, match=rf"pip configuration {conf} \[global\] cert names"):
        tls.trust(_bare(tmp_path, PIP_CONFIG_FILE=str(conf)))


def test_uv_gets_the_chosen_bundle_and_native_tls_but_not_pips_other_settings(tmp_path, monkeypatch):
    bundle = tmp_path / "proxy.pem"
    bundle.write_text("pem")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.setenv("PIP_CERT", str(bundle))
    env = uvtool.uv_env(tmp_path / "uv-cache")
    assert env["SSL_CERT_FILE"] == str(bundle) and env["UV_NATIVE_TLS"] == "1"
    assert "PIP_CERT" not in env
    assert "SSL_CERT_FILE" not in uvtool.uv_env(tmp_path / "uv-cache", offline=True)  # offline: no index at all


FLOW = """
from metaflow import FlowSpec, step, pypi
class TlsFlow(FlowSpec):
    @pypi(packages={"six": "1.16.0"})
    @step
    def start(self):
        self.next(self.end)
    @step
    def end(self):
        pass
"""


@pytest.fixture
def https_index(base_wheels, ca):
    index = TlsIndex(base_wheels, ca["good"])
    yield index
    index.close()


def _repro(tmp_path, https_index, *args, **env):
    base = {
        "REPRO_HOME": str(tmp_path / "repro-home"),  # a fresh uv cache: nothing answered from an earlier case
        "REPRO_INDEX_URL": https_index.url,
        "PIP_CONFIG_FILE": os.devnull,
        "SSL_CERT_FILE": "",
        "REQUESTS_CA_BUNDLE": "",
        "PIP_CERT": "",
    }
    flow = write_flow(tmp_path / "proj", FLOW)
    return cli(*args, flow, env={**base, **env})


def test_an_untrusted_proxy_certificate_fails_naming_the_trust_that_was_tried(tmp_path, https_index):
    r = _repro(tmp_path, https_index, "lock")
    assert r.code == 3, r.text
    assert "TLS trust: the system's trust store" in r.err


def test_pips_cert_is_honoured_for_resolving_and_downloading(tmp_path, https_index, ca):
    conf = _pip_conf(tmp_path / "pip.conf", cert=ca["good"]["ca"])
    r = _repro(tmp_path, https_index, "lock", PIP_CONFIG_FILE=str(conf))
    assert r.code == 0, r.text
    built = _repro(tmp_path, https_index, "env", "build", PIP_CERT=str(ca["good"]["ca"]))
    assert built.code == 0, built.text
    assert any(p.startswith("/files/six-1.16.0") for p in https_index.requests)  # downloaded over TLS


def test_ssl_cert_file_comes_first_and_a_failure_names_it(tmp_path, https_index, ca):
    r = _repro(tmp_path, https_index, "lock", SSL_CERT_FILE=str(ca["other"]["ca"]), PIP_CERT=str(ca["good"]["ca"]))
    assert r.code == 3, r.text
    assert f"TLS trust: CA bundle {ca['other']['ca']} (from SSL_CERT_FILE)" in r.err
    ok = _repro(tmp_path, https_index, "lock", REQUESTS_CA_BUNDLE=str(ca["good"]["ca"]))
    assert ok.code == 0, ok.text
