"""{prefix}/_admin: off without a token, Bearer-only data, stats, metrics, purge, audit."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import webtest

from fic_middleware import ConfigError

from .conftest import Origin
from .images import png

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(make_mw: Any) -> webtest.TestApp:
    return webtest.TestApp(make_mw(admin_token=TOKEN))


def test_admin_is_off_without_a_token(client: webtest.TestApp) -> None:
    for path in ("/_fic/_admin/", "/_fic/_admin/stats", "/_fic/_admin/metrics"):
        client.get(path, headers=AUTH, status=404)
    client.post("/_fic/_admin/purge", '{"all": true}', headers=AUTH, status=405)


@pytest.mark.parametrize("path", ["/_fic/_admin/stats", "/_fic/_admin/metrics"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", TOKEN,
                                           f"bearer {TOKEN}", f"Basic {TOKEN}"])
def test_data_needs_the_exact_bearer_token(admin: webtest.TestApp, path: str,
                                           authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = admin.get(path, headers=headers, status=401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "requests" not in response.text and "fic_" not in response.text


def test_dashboard_page_is_self_contained(admin: webtest.TestApp) -> None:
    for path in ("/_fic/_admin", "/_fic/_admin/"):
        page = admin.get(path)
        assert page.content_type == "text/html"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert "http://" not in page.text and "https://" not in page.text.replace(
            'placeholder="https://images.example.com/cat.png"', "")
        assert page.headers["Cache-Control"] == "no-store"


def test_stats(admin: webtest.TestApp, origin: Origin) -> None:
    admin.get("/_fic/o/t/img/s1.png")
    admin.get("/_fic/o/t/img/s1.png")
    admin.get("/_fic/o/t/img/s1.png")
    admin.get("/_fic/o/nope/x.png", status=404)
    stats = admin.get("/_fic/_admin/stats", headers=AUTH).json
    assert stats["requests"]["hit"] == 2 and stats["requests"]["miss"] == 1
    assert stats["hit_ratio"] == round(2 / 3, 4)
    assert stats["errors"] == {"404": 1}
    assert stats["storage"]["entries"] == 1 and stats["storage"]["eviction"] == "lru"
    assert stats["origins"] == [{"origin": "t", "fetches": 1, "bytes": len(png("s1.png"))}]
    assert TOKEN not in json.dumps(stats)


def test_metrics(admin: webtest.TestApp) -> None:
    admin.get("/_fic/o/t/img/m1.png")
    admin.get("/_fic/o/t/img/m1.png")
    text = admin.get("/_fic/_admin/metrics", headers=AUTH).text
    assert 'fic_requests_total{result="hit"} 1.0' in text
    assert 'fic_requests_total{result="miss"} 1.0' in text
    assert 'fic_origin_fetches_total{origin="t"} 1.0' in text
    assert "fic_origin_fetch_seconds_bucket" in text and "fic_stored_bytes" in text
    assert "fic_entries 1.0" in text


@pytest.mark.parametrize("body, purged", [
    pytest.param({"path": "/_fic/o/t/img/p.png"}, 1, id="path"),
    pytest.param({"all": True}, 2, id="all"),
])
def test_purge(admin: webtest.TestApp, body: dict[str, Any], purged: int) -> None:
    admin.get("/_fic/o/t/img/p.png")
    admin.get("/_fic/o/t/img/q.png")
    response = admin.post_json("/_fic/_admin/purge", body, headers=AUTH)
    assert response.json == {"purged": purged}
    assert admin.get("/_fic/o/t/img/p.png").headers["Cache-Status"] == "fic; fwd=miss; stored"


def test_purge_by_url(admin: webtest.TestApp, origin: Origin) -> None:
    admin.get("/_fic/o/t/img/u.png")
    response = admin.post_json("/_fic/_admin/purge", {"url": f"{origin.base}/img/u.png"}, headers=AUTH)
    assert response.json == {"purged": 1}


@pytest.mark.parametrize("body", ['{"all": false}', '{"url": 3}', '{"path": "/_fic/o/t/../x"}',
                                  '{"url": "ftp://x"}', '[]', 'not json', '{"url": "a", "all": true}',
                                  '{"what": 1}'])
def test_bad_purge_requests_get_400(admin: webtest.TestApp, body: str) -> None:
    response = admin.post("/_fic/_admin/purge", body, headers={**AUTH, "Content-Type": "application/json"},
                          status=400)
    assert "error" in response.json


def test_purge_without_a_body(admin: webtest.TestApp) -> None:
    admin.post("/_fic/_admin/purge", headers=AUTH, status=400)


def test_purge_needs_post(admin: webtest.TestApp) -> None:
    response = admin.get("/_fic/_admin/purge", headers=AUTH, status=405)
    assert response.headers["Allow"] == "POST"
    admin.post("/_fic/_admin/stats", headers=AUTH, status=405)
    admin.get("/_fic/_admin/nothing", headers=AUTH, status=404)


def test_audit_log(admin: webtest.TestApp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fic_middleware.audit"):
        admin.get("/_fic/_admin/stats", headers={"Authorization": "Bearer nope"}, status=401)
        admin.post_json("/_fic/_admin/purge", {"all": True}, headers=AUTH)
    records = [r for r in caplog.records if r.name == "fic_middleware.audit"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "refused" in records[0].getMessage() and "purge all=True" in records[1].getMessage()
    assert all(TOKEN not in r.getMessage() and "nope" not in r.getMessage() for r in records)


def test_admin_token_file(make_mw: Any, tmp_path: Any) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    client = webtest.TestApp(make_mw(admin_token_file=str(path)))
    client.get("/_fic/_admin/stats", headers=AUTH, status=200)
    with pytest.raises(ConfigError, match="^admin_token_file:"):
        make_mw(admin_token_file=str(tmp_path / "missing"))
