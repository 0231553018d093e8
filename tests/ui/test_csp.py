"""The pages' content security policy allows no inline styles, and no page needs one:
every page a crawl reaches carries the policy and has no ``style`` attribute or element;
computed colors and widths are classes the stylesheet defines."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from plinth.client import Client
from plinth.ui.charts import PALETTE
from tests.compute.conftest import compute, py
from tests.conftest import make_settings, raw_http
from tests.registry.files import model_files
from tests.ui.crawl import crawl

UI = Path(__file__).parents[2] / "src" / "plinth" / "ui"
INLINE_STYLE = re.compile(r"<[^>]*\sstyle\s*=|<style[\s>]", re.IGNORECASE)
DEPLOYMENT = "/projects/shop/deployments/svc"


@dataclass
class Site:
    http: httpx.Client
    compare: str  # the compare page of two runs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Runs with metrics (charts, swatches), a model whose deployment has a canary (the
    split bar), a declared node (usage bars) and a finished job (its page and log)."""
    tmp = tmp_path_factory.mktemp("csp-ui")
    with Client(settings=make_settings(tmp / "home", compute=compute())) as client:
        ids = []
        for lr in (0.1, 0.01):
            run = client.create_run("shop", name=f"lr-{lr}", params={"lr": lr})
            points = [{"key": "loss", "value": lr * step, "step": step} for step in range(5)]
            client.log_batch(run.id, metrics=points)
            ids.append(run.id)
        for n in (1, 2):
            client.log_artifacts(ids[0], model_files(tmp / f"m{n}", f"w{n}".encode()), f"m{n}")
            client.register_model(ids[0], f"m{n}", "churn")
        client.create_deployment("shop", "svc", "models:/shop/churn/1", runtime="memory")
        client.update_deployment("shop", "svc", canary="models:/shop/churn/2", weight=10)
        job = client.submit_job("shop", py("print('done')"))
        client.wait_job("shop", job.id, timeout=20)
        yield Site(raw_http(client), f"/compare?runs={ids[0]},{ids[1]}")


def test_every_page_a_crawl_reaches_has_a_strict_csp_and_no_inline_style(site: Site) -> None:
    missing = "/runs/" + "0" * 32  # an HTML 404 page
    pages = crawl(site.http, ["/", site.compare, DEPLOYMENT, missing])
    assert {"/", site.compare, DEPLOYMENT, f"{DEPLOYMENT}/traffic", missing} <= pages.keys()
    assert any("use-fill" in page.text for page in pages.values())  # the usage bars
    assert len(pages) > 20
    for url, page in pages.items():
        policy = page.headers.get("content-security-policy")
        assert policy is not None, url
        assert _directive(policy, "style-src") == ["'self'"], url
        found = INLINE_STYLE.search(page.text)
        assert found is None, f"{url}: {found and found.group(0)}"


def test_computed_colors_and_widths_are_classes(site: Site) -> None:
    text = site.http.get(DEPLOYMENT).text
    assert re.findall(r'<span class="split-part ([\w -]+)"', text) == [
        "w-90 color-0",
        "w-10 color-1",
    ]
    assert '<span class="swatch color-1"></span><a href=' in text
    compare = site.http.get(site.compare).text
    assert compare.count('class="swatch color-0"') == 2  # its table row and its legend
    assert f'stroke="{PALETTE[1]}"' in compare  # SVG keeps its color as an attribute


def test_the_stylesheet_defines_every_class_the_pages_compute() -> None:
    css = (UI / "static" / "style.css").read_text()
    for i, color in enumerate(PALETTE):
        assert f".color-{i} {{ background: {color}; }}" in css
    for n in range(101):
        assert f".w-{n} {{ width: {n}%; }}" in css


def test_no_template_or_html_writing_module_has_an_inline_style() -> None:
    """Also the branches a crawl may not reach: every template and every module that
    writes HTML or SVG."""
    sources = [*(UI / "templates").glob("*.html"), *UI.glob("*.py")]
    assert len(sources) > 10
    for source in sources:
        assert INLINE_STYLE.search(source.read_text()) is None, source.name
        assert "style=" not in source.read_text(), source.name


def _directive(policy: str, name: str) -> list[str]:
    for directive in policy.split(";"):
        words = directive.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"no {name} in {policy!r}")
