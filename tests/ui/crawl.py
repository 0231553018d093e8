"""Walk the UI as a reader would: from some start pages, every same-site page a link
(``href``) or a polled fragment (``data-poll``, ``data-logs``) leads to, by GET only."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

import httpx

_LINK = re.compile(r'\b(?:href|data-poll|data-logs)="([^"]*)"')
# Not pages of the UI: the API (its docs page is Swagger UI's), files, scrapes.
_SKIPPED = ("/api/", "/ui/static/", "/mlflow/", "/metrics", "/healthz", "/readyz")


def crawl(http: httpx.Client, starts: Iterable[str], limit: int = 400) -> dict[str, httpx.Response]:
    """Every HTML response reached from ``starts``, by path and query."""
    queue, seen = list(starts), set(starts)
    pages: dict[str, httpx.Response] = {}
    while queue and len(pages) < limit:
        url = queue.pop(0)
        response = http.get(url)
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        pages[url] = response
        for found in links(url, response.text):
            if found not in seen:
                seen.add(found)
                queue.append(found)
    return pages


def links(base: str, text: str) -> list[str]:
    """The site's own pages ``text`` links to, resolved against ``base``."""
    found = []
    for raw in _LINK.findall(text):
        parts = urlsplit(urljoin(base, html.unescape(raw)))
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            continue  # another site, a data: URL, a fragment of this page
        if parts.path.startswith(_SKIPPED) or "/artifacts/" in parts.path:
            continue
        found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found
