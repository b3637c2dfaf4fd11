"""Swagger UI (/docs) and ReDoc (/redoc) work on an isolated network: each page, and every
script, stylesheet, icon and spec it references, comes from the service itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in ("src", "href", "spec-url", "data", "action", "poster"):
                self.urls.append(value)


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    # Swagger UI names its spec in the inline script: `url: '/openapi.json'`.
    return parser.urls + re.findall(r"\burl:\s*['\"]([^'\"]+)['\"]", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_nothing_from_another_host(client, page):
    r = client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    urls = _references(r.text)
    assert any(u.endswith(".js") for u in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    # Nor anything the parser does not see (inline script, fonts, the validator badge).
    assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", r.text, re.I), r.text


def test_the_assets_are_the_real_bundles(client):
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert b"SwaggerUIBundle" in js.content
    assert b"Redoc" in client.get("/docs-assets/redoc.standalone.js").content
    assert client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_the_swagger_oauth2_redirect_page_is_served(client):
    r = client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()
