"""/docs and /redoc work without the internet: the pages the running edge serves name
only its own URLs, and it serves every script, stylesheet and icon they load."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest


class Loads(HTMLParser):
    """What a browser fetches for a page: scripts, stylesheets and icons, and ReDoc's spec."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "redoc": "spec-url"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


@pytest.mark.parametrize("page, library", [("/docs", b"SwaggerUIBundle"), ("/redoc", b"Redoc")])
def test_the_docs_load_only_what_the_edge_serves(stack, page, library):
    with httpx.Client(base_url=stack.url, timeout=30) as client:  # no key: the docs are public
        answer = client.get(page)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        # Nothing absolute anywhere in the page: no CDN, no web font, no validator badge.
        assert "http://" not in answer.text and "https://" not in answer.text
        loads = Loads()
        loads.feed(answer.text)
        scripts = [url for url in loads.urls if url.endswith(".js")]
        assert scripts and [url for url in loads.urls if url.endswith(".png")], loads.urls
        for url in loads.urls:
            assert not urlsplit(url).scheme and not urlsplit(url).netloc, url
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, (url, asset.status_code)
        if page == "/docs":
            assert [url for url in loads.urls if url.endswith(".css")], loads.urls
            assert client.get("/openapi.json").status_code == 200  # the spec Swagger UI is pointed at
        assert any(library in client.get(url).content for url in scripts), f"{page} does not load its UI"
