"""The registry's pages: a project's models, a version's page, and moving an alias or
archiving from it (forms with their CSRF token, refusals shown in the page)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from plinth.client import Client
from plinth.ui.models import FORM_CSRF_COOKIE
from tests.conftest import make_settings, raw_http
from tests.registry.files import model_files

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
VERSION = "/projects/shop/models/churn/versions"
PASSWORD = "a long enough password"


@dataclass
class Site:
    root: Client
    http: httpx.Client  # root's, with its token
    viewer: httpx.Client
    run_id: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A home with logins: root (admin), a viewer of ``shop``; ``churn`` versions 1 and 2
    (champion on 1, with a hostile reason), version 2 carrying hostile card text."""
    tmp = tmp_path_factory.mktemp("models-ui")
    settings = make_settings(tmp / "home")
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    root = Client(settings=settings.model_copy(update={"token": token}))
    viewer_token = root.create_user("viewer").token.token
    viewer = Client(settings=settings.model_copy(update={"token": viewer_token}))
    run = root.create_run("shop", name="train")
    root.log_artifacts(run.id, model_files(tmp / "m1", b"one"), "model-1")
    root.log_artifacts(run.id, model_files(tmp / "m2", b"two"), "model-2")
    root.register_model(run.id, "model-1", "churn")
    root.register_model(run.id, "model-2", "churn")
    root.set_model_alias("shop", "churn", "champion", 1, reason=EVIL)
    root.set_model_version_tag("shop", "churn", 2, key="owner", value=EVIL)
    root.update_model_version("shop", "churn", 2, card={"limitations": EVIL})
    root.log_artifacts(run.id, model_files(tmp / "m3", flavor="python", unsafe_pickle=True), "p")
    root.register_model(run.id, "p", "pickled")
    root.add_member("shop", "viewer", "viewer")
    root.set_password("root", PASSWORD)
    try:
        yield Site(root, raw_http(root), raw_http(viewer), run.id)
    finally:
        viewer.close()
        root.close()


def test_models_list_shows_latest_version_aliases_and_links(site: Site) -> None:
    page = site.http.get("/projects/shop/models")
    assert page.status_code == 200
    assert f'href="{VERSION}/2">version 2</a>' in page.text
    assert f'href="{VERSION}/1">champion → 1</a>' in page.text
    assert 'href="/projects/shop/models" aria-current="page"' in page.text
    runs = site.http.get("/projects/shop")
    assert 'href="/projects/shop/models">Models</a>' in runs.text


def test_version_page_shows_card_signature_files_history_tags_and_run(site: Site) -> None:
    page = site.http.get(f"{VERSION}/1")
    assert page.status_code == 200
    text = page.text
    assert '<article class="model-card">' in text  # the registry's card, inside the page
    assert "<code>float64</code>" in text and "<code>[-1]</code>" in text  # signature
    assert "MLmodel.json" in text and "model.bin" in text
    for f in _files(site, 1):
        assert f"sha256:{f['digest']}" in text
    assert f'href="/runs/{site.run_id}"' in text
    assert "status-ready" in text and "status-blocked" not in text
    history = re.search(r'<table class="grid-table history">.*?</table>', text, re.S)
    assert history is not None
    assert "champion" in history.group() and "new → 1" in history.group()
    assert "root" in history.group() and ESCAPED in history.group()


def _files(site: Site, version: int) -> list[dict[str, str]]:
    listed = site.http.get(f"/api/v1/projects/shop/models/churn/versions/{version}/files")
    return list(listed.json())


def test_a_pickled_version_says_it_is_not_servable_until_marked(site: Site) -> None:
    page = site.http.get("/projects/shop/models/pickled/versions/1")
    assert "needs pickle: not servable until an admin marks it" in page.text
    site.root.update_model_version("shop", "pickled", 1, unsafe_pickle=True)
    page = site.http.get("/projects/shop/models/pickled/versions/1")
    assert "needs pickle: marked unsafe_pickle" in page.text


def test_hostile_text_is_escaped_in_card_tags_and_history(site: Site) -> None:
    for url in (f"{VERSION}/1", f"{VERSION}/2", "/projects/shop/models"):
        page = site.http.get(url)
        assert page.status_code == 200, url
        assert EVIL not in page.text, url
    page = site.http.get(f"{VERSION}/2")
    card = page.text[page.text.index('<article class="model-card">') :]
    assert ESCAPED in card  # the limitations field, escaped by the card's template
    assert f"<td>{ESCAPED}</td>" in page.text  # the tag


def test_an_editor_moves_an_alias_and_the_history_shows_it(site: Site) -> None:
    moved = site.http.post(
        f"{VERSION}/2/alias", data={"alias": "challenger", "reason": "better AUC & <b>"}
    )
    assert moved.status_code == 303 and moved.headers["location"] == f"{VERSION}/2"
    page = site.http.get(f"{VERSION}/2").text
    history = re.search(r'<table class="grid-table history">.*?</table>', page, re.S)
    assert history is not None and "new → 2" in history.group()
    assert "better AUC &amp; &lt;b&gt;" in history.group()
    assert site.root.get_model_version("models:/shop/churn@challenger").version == 2


def test_a_viewer_is_refused_in_the_page(site: Site) -> None:
    before = site.root.model_alias_history("shop", "churn")
    page = site.viewer.post(f"{VERSION}/2/alias", data={"alias": "champion", "reason": "mine"})
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in page.text and "Not changed:" in page.text
    assert "viewer" in page.text and "Traceback" not in page.text
    assert 'value="mine"' in page.text  # what was typed, to try again
    assert site.root.model_alias_history("shop", "churn") == before
    archive = site.viewer.post(f"{VERSION}/2/status", data={"status": "archived"})
    assert archive.status_code == 403 and "Not changed:" in archive.text


def test_a_bad_alias_name_is_explained_in_the_page(site: Site) -> None:
    page = site.http.post(f"{VERSION}/2/alias", data={"alias": "42", "reason": ""})
    assert page.status_code == 400 and "an alias is 1-64 letters" in page.text


def test_archive_and_restore(site: Site) -> None:
    archived = site.http.post(f"{VERSION}/2/status", data={"status": "archived"})
    assert archived.status_code == 303
    page = site.http.get(f"{VERSION}/2").text
    assert "status-archived" in page and "An archived version takes no alias" in page
    assert 'id="alias-form"' not in page and "Restore version 2" in page
    refused = site.http.post(f"{VERSION}/2/alias", data={"alias": "champion"})
    assert refused.status_code == 409 and "archived" in refused.text
    assert site.http.post(f"{VERSION}/2/status", data={"status": "ready"}).status_code == 303
    assert site.root.get_model_version("shop", "churn", 2).status == "ready"


def test_unknown_model_and_version_are_html_404_pages(site: Site) -> None:
    for url in (f"{VERSION}/9", "/projects/shop/models/nope/versions/1"):
        page = site.http.get(url)
        assert page.status_code == 404 and "Not found" in page.text, url
    outsider = site.http.get("/projects/nope/models")
    assert outsider.status_code == 404


def test_a_session_form_needs_both_csrf_tokens(site: Site) -> None:
    """Logged in through the login form: the alias form is accepted only with the
    page's form token (cookie + field) and the session's token in X-CSRF-Token."""
    with httpx.Client(transport=site.http._transport, base_url=site.http.base_url) as browser:
        browser.get("/login")
        login = browser.post(
            "/login",
            data={"user": "root", "password": PASSWORD, "next": "/", "csrf": _cookie(browser)},
        )
        assert login.status_code == 303
        page = browser.get(f"{VERSION}/1")
        field = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert field is not None and browser.cookies.get(FORM_CSRF_COOKIE) == field.group(1)
        session_csrf = browser.cookies["plinth_csrf"]
        form = {"alias": "staging", "reason": "by session", "csrf": field.group(1)}
        no_header = browser.post(f"{VERSION}/1/alias", data=form)
        assert no_header.status_code == 403 and "CSRF" in no_header.text
        wrong_field = browser.post(
            f"{VERSION}/1/alias",
            data={**form, "csrf": "forged"},
            headers={"X-CSRF-Token": session_csrf},
        )
        assert wrong_field.status_code == 403 and "form has expired" in wrong_field.text
        moved = browser.post(
            f"{VERSION}/1/alias", data=form, headers={"X-CSRF-Token": session_csrf}
        )
        assert moved.status_code == 303
    assert site.root.get_model_version("models:/shop/churn@staging").version == 1


def _cookie(browser: httpx.Client) -> str:
    return str(browser.cookies.get("plinth_login_csrf"))


def test_without_logins_the_form_token_guards_the_form(tmp_path: Path) -> None:
    """A server without logins has no session token: the form's own token is what
    stops another site's form from moving an alias."""
    with Client(settings=make_settings(tmp_path / "home")) as client:
        run = client.create_run("p")
        client.log_artifacts(run.id, model_files(tmp_path / "m"), "model")
        client.register_model(run.id, "model", "m")
        http = raw_http(client)
        url = "/projects/p/models/m/versions/1"
        forged = http.post(f"{url}/alias", data={"alias": "champion"})
        assert forged.status_code == 403 and "form has expired" in forged.text
        token = re.search(r'name="csrf" value="([^"]+)"', http.get(url).text)
        assert token is not None
        moved = http.post(f"{url}/alias", data={"alias": "champion", "csrf": token.group(1)})
        assert moved.status_code == 303
        assert client.get_model_version("models:/p/m@champion").version == 1
