"""Fetching over TLS: certificates verified by default, redirects never downgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
import webtest

from .conftest import Origin
from .images import png


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_https_origin_with_a_trusted_certificate(make_mw: Any, tls_origin: Origin, ca_file: str) -> None:
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}, ca_bundle=ca_file))
    assert client.get("/_fic/o/s/img/tls.png").body == png("tls.png")


def test_untrusted_certificate_gets_502(make_mw: Any, tls_origin: Origin) -> None:
    """certifi's bundle does not know the test CA: like a self-signed origin."""
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}))
    response = client.get("/_fic/o/s/img/tls.png", status=502)
    assert response.text == "TLS connection to the origin failed\n"


def test_certificate_for_another_name_gets_502(make_mw: Any, tls_origin: Origin, ca_file: str) -> None:
    """The certificate names 127.0.0.1 and localhost; ::1 is not on it."""
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base.replace("127.0.0.1", "[::1]")},
                                     ca_bundle=ca_file, allowed_networks=["::1/128"]))
    response = client.get("/_fic/o/s/img/tls.png", expect_errors=True)
    assert response.status_int == 502


def test_verify_tls_false_is_explicit(make_mw: Any, tls_origin: Origin) -> None:
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}, verify_tls=False))
    assert client.get("/_fic/o/s/img/tls.png").body == png("tls.png")


def test_https_to_http_redirect_is_refused(make_mw: Any, tls_origin: Origin, origin: Origin,
                                           ca_file: str) -> None:
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}, ca_bundle=ca_file,
                                     forward_query=True))
    client.get(f"/_fic/o/s/goto/x?to={origin.base}/img/a.png", status=403)
    assert not origin.hits


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/a.png", "file:///etc/passwd",
                                      "http://user@127.0.0.1/a.png"])
def test_redirect_to_a_bad_url_is_refused(make_mw: Any, origin: Origin, location: str) -> None:
    client = webtest.TestApp(make_mw(forward_query=True))
    client.get(f"/_fic/o/t/goto/x?to={location}", status=403)
    assert list(origin.hits) == ["/goto/x"]
