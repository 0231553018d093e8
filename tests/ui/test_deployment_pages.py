"""The deployments' pages: a project's deployments, one deployment's page (split,
shadow, replicas, URL, history, traffic), promote and rollback from it (forms with
their CSRF token, refusals shown in the page). Deployments run on the ``memory``
runtime: replicas on paper, no processes. The traffic arithmetic is checked on
real Prometheus text from the serving data plane's own metrics."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from plinth.client import Client
from plinth.serving import observe
from plinth.serving.metrics import ServingMetrics
from plinth.ui.forms import FORM_CSRF_COOKIE
from tests.conftest import make_settings, raw_http
from tests.registry.files import model_files
from tests.serving.conftest import IRIS_ROW, deployment_ready, log_iris

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
PAGE = "/projects/shop/deployments"
URI = "models:/shop/churn"


@dataclass
class Site:
    root: Client
    http: httpx.Client  # root's, with its token
    viewer: httpx.Client
    settings_home: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A home with logins: root (admin), a viewer of ``shop``; ``churn`` versions 1-3;
    ``svc`` serves 1 with a canary of 2 (a hostile reason) and a shadow of 3."""
    tmp = tmp_path_factory.mktemp("deploy-ui")
    settings = make_settings(tmp / "home")
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    root = Client(settings=settings.model_copy(update={"token": token}))
    viewer_token = root.create_user("viewer").token.token
    viewer = Client(settings=settings.model_copy(update={"token": viewer_token}))
    run = root.create_run("shop", name="train")
    for n in (1, 2, 3):
        root.log_artifacts(run.id, model_files(tmp / f"m{n}", f"w{n}".encode()), f"model-{n}")
        root.register_model(run.id, f"model-{n}", "churn")
    root.create_deployment("shop", "svc", f"{URI}/1", runtime="memory", replicas=2)
    root.update_deployment("shop", "svc", canary=f"{URI}/2", weight=10, reason=EVIL)
    root.update_deployment("shop", "svc", shadow=f"{URI}/3", reason="watch v3")
    root.add_member("shop", "viewer", "viewer")
    try:
        yield Site(root, raw_http(root), raw_http(viewer), tmp / "home")
    finally:
        viewer.close()
        root.close()


def _fresh(site: Site, name: str) -> str:
    """A deployment of its own with a canary of version 2 at 25%."""
    site.root.create_deployment("shop", name, f"{URI}/1", runtime="memory")
    site.root.update_deployment("shop", name, canary=f"{URI}/2", weight=25, reason="try v2")
    return f"{PAGE}/{name}"


def test_list_shows_each_deployment_with_split_and_a_tab(site: Site) -> None:
    page = site.http.get(PAGE)
    assert page.status_code == 200
    assert f'href="{PAGE}/svc">svc</a>' in page.text
    assert "v1 90% · v2 10%" in page.text
    assert f'href="{PAGE}" aria-current="page"' in page.text
    runs = site.http.get("/projects/shop")
    assert f'href="{PAGE}">Deployments</a>' in runs.text


def test_page_shows_split_shadow_replicas_url_and_history(site: Site) -> None:
    d = site.root.get_deployment("shop", "svc")
    page = site.http.get(f"{PAGE}/svc")
    assert page.status_code == 200
    text = page.text
    assert 'class="split-bar"' in text
    assert 'class="split-part w-90 color-0"' in text and 'class="split-part w-10 color-1"' in text
    assert "/projects/shop/models/churn/versions/2" in text  # split links to the versions
    assert "version 3</a> sees a copy of every request" in text  # the shadow
    assert text.count('<span class="status status-ready">ready</span>') == 2  # replicas
    assert d.url in text
    assert text.count('<td class="action">update</td>') == 2
    assert '<td class="action">create</td>' in text and "watch v3" in text
    assert "v1 100% → v1 90% · v2 10%" in text  # the change the canary made
    assert 'id="rollback-form"' in text and 'id="promote-form"' in text
    assert 'data-poll="/projects/shop/deployments/svc/traffic"' in text
    assert "No replica reported metrics" in text  # the memory runtime keeps none


def test_hostile_reason_is_escaped(site: Site) -> None:
    text = site.http.get(f"{PAGE}/svc").text
    assert EVIL not in text and ESCAPED in text


def test_an_editor_rolls_back_and_the_split_changes(site: Site) -> None:
    url = _fresh(site, "roll")
    assert [e.weight for e in site.root.get_deployment("shop", "roll").split] == [75, 25]
    done = site.http.post(f"{url}/rollback", data={"reason": "v2 is slow"})
    assert done.status_code == 303 and done.headers["location"] == url
    d = site.root.get_deployment("shop", "roll")
    assert [(e.version, e.weight) for e in d.split] == [(1, 100)]
    page = site.http.get(url).text
    assert 'class="split-part w-100 color-0"' in page and '<td class="action">rollback</td>' in page
    assert "v2 is slow" in page and "v1 75% · v2 25% → v1 100%" in page


def test_promote_and_a_refusal_when_nothing_to_promote(site: Site) -> None:
    url = _fresh(site, "promo")
    assert site.http.post(f"{url}/promote", data={"reason": "good"}).status_code == 303
    d = site.root.get_deployment("shop", "promo")
    assert [(e.version, e.weight) for e in d.split] == [(2, 100)]
    again = site.http.post(f"{url}/promote", data={"reason": "again"})
    assert again.status_code == 409 and "no canary to promote" in again.text
    assert 'value="again"' in again.text


def test_unknown_deployment_and_outsider_are_html_404_pages(site: Site) -> None:
    for url in (f"{PAGE}/nope", f"{PAGE}/nope/traffic", "/projects/nope/deployments"):
        page = site.http.get(url)
        assert page.status_code == 404 and "Not found" in page.text, url


def test_traffic_fragment_renders_for_a_reader(site: Site) -> None:
    fragment = site.viewer.get(f"{PAGE}/svc/traffic")
    assert fragment.status_code == 200
    assert fragment.text.startswith('<div class="traffic-charts">')


def test_a_browser_form_needs_the_form_token(tmp_path: Path) -> None:
    """Without logins no session token exists: the form's own token (cookie + field)
    is what stops another site's form from rolling a deployment back."""
    with Client(settings=make_settings(tmp_path / "home")) as client:
        run = client.create_run("shop")
        for n in (1, 2):
            client.log_artifacts(run.id, model_files(tmp_path / f"m{n}", bytes([n])), f"m{n}")
            client.register_model(run.id, f"m{n}", "churn")
        client.create_deployment("shop", "svc", f"{URI}/1", runtime="memory")
        client.update_deployment("shop", "svc", canary=f"{URI}/2", weight=50)
        http = raw_http(client)
        with httpx.Client(transport=http._transport, base_url=http.base_url) as browser:
            before = client.get_deployment("shop", "svc")
            for verb, data in FORMS.items():
                forged = browser.post(f"{PAGE}/svc/{verb}", data={**data, "csrf": "forged"})
                assert forged.status_code == 403 and "form has expired" in forged.text, verb
            assert client.get_deployment("shop", "svc").generation == before.generation
            page = browser.get(f"{PAGE}/svc")
            field = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert field is not None and browser.cookies.get(FORM_CSRF_COOKIE) == field.group(1)
            done = browser.post(f"{PAGE}/svc/rollback", data={"csrf": field.group(1)})
            assert done.status_code == 303
        assert len(client.get_deployment("shop", "svc").split) == 1


# the forms that change a deployment --------------------------------------------------


def _post(site: Site, url: str, verb: str, http: httpx.Client | None = None, **data: Any) -> Any:
    """Send one of the page's forms as the page would: with the generation it showed."""
    name = url.rsplit("/", 1)[1]
    data.setdefault("generation", site.root.get_deployment("shop", name).generation)
    return (http or site.http).post(f"{url}/{verb}", data=data)


def _state(site: Site, name: str) -> tuple[Any, ...]:
    d = site.root.get_deployment("shop", name)
    split = [(e.version, e.weight) for e in d.split]
    shadow = d.shadow.version if d.shadow else None
    return d.generation, split, shadow, (d.desired_replicas, d.min_replicas, d.max_replicas)


def _refused(page: httpx.Response, status: int, *words: str) -> None:
    assert page.status_code == status, page.text[:500]
    assert page.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in page.text and "Not changed:" in page.text
    assert "Traceback" not in page.text
    text = html.unescape(page.text)
    for word in words:
        assert word in text, word


def test_the_page_offers_every_form_with_its_token_and_generation(site: Site) -> None:
    d = site.root.get_deployment("shop", "svc")
    text = site.http.get(f"{PAGE}/svc").text
    forms = re.findall(r'<form class="inline-form" id="([a-z-]+)-form"', text)
    assert forms == ["canary", "promote", "rollback", "shadow", "shadow-off", "scale",
                     "autoscale", "delete"]  # fmt: skip
    assert text.count(f'name="generation" value="{d.generation}"') == len(forms)
    assert text.count('name="csrf" value="') == len(forms)
    assert "Remove shadow (v3)" in text and 'id="delete"' in text
    assert '<option value="3">version 3</option>' in text  # the versions to choose from


def test_set_a_canary_by_number_alias_or_uri(site: Site) -> None:
    site.root.create_deployment("shop", "can", f"{URI}/1", runtime="memory")
    url = f"{PAGE}/can"
    done = _post(site, url, "canary", canary="2", weight=20, reason="try v2")
    assert done.status_code == 303 and done.headers["location"] == url
    assert _state(site, "can")[1] == [(1, 80), (2, 20)]
    site.root.set_model_alias("shop", "churn", "challenger", 3)
    assert _post(site, url, "canary", canary="@challenger", weight=5).status_code == 303
    assert _state(site, "can")[1] == [(1, 95), (3, 5)]
    assert _post(site, url, "canary", canary=f"{URI}/2", weight=50).status_code == 303
    assert _state(site, "can")[1] == [(1, 50), (2, 50)]
    history = site.root.deployment_history("shop", "can")
    assert history[2].reason == "try v2" and history[1].after is not None
    assert history[1].after["split"][1]["uri"] == f"{URI}@challenger"  # the URI it meant


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        ({"canary": "2", "weight": 0}, 400, "1 to 99 percent"),
        ({"canary": "2", "weight": 100}, 400, "1 to 99 percent"),
        ({"canary": "9", "weight": 10}, 404, "9"),  # no such version
        ({"canary": "1", "weight": 10}, 400, "whole split already"),
        ({"canary": "two", "weight": 10}, 400, "a number, an @alias or a models:/ URI"),
        ({"canary": "@nope", "weight": 10}, 404, "nope"),
        ({"canary": "models:/other/churn/2", "weight": 10}, 400, "its own project"),
        ({"canary": "models:/shop/other/2", "weight": 10}, 400, "serves model"),
    ],
)
def test_a_bad_canary_is_shown_in_the_page_and_changes_nothing(
    site: Site, data: dict[str, Any], status: int, says: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    site.root.create_deployment("shop", name, f"{URI}/1", runtime="memory")
    before = _state(site, name)
    page = _post(site, f"{PAGE}/{name}", "canary", **data, reason="typed reason")
    _refused(page, status, says, 'value="typed reason"', f'value="{data["canary"]}"')
    assert _state(site, name) == before


def test_a_weight_that_is_no_number_is_a_400_and_changes_nothing(site: Site) -> None:
    url = _fresh(site, f"nan-{uuid.uuid4().hex[:8]}")
    before = _state(site, url.rsplit("/", 1)[1])
    page = _post(site, url, "canary", canary="2", weight="ten")
    assert page.status_code == 400 and "weight" in page.text and "Traceback" not in page.text
    assert _state(site, url.rsplit("/", 1)[1]) == before


def test_a_page_older_than_a_change_is_refused_with_409(site: Site) -> None:
    """Someone else (or the autoscaler) changed the deployment after this page was
    shown: its form does not act on what the person did not see."""
    url = _fresh(site, "stale")
    shown = site.root.get_deployment("shop", "stale").generation
    site.root.update_deployment("shop", "stale", canary=f"{URI}/3", weight=30)
    after = _state(site, "stale")
    for verb, data in [
        ("promote", {}),
        ("rollback", {}),
        ("canary", {"canary": "2", "weight": 5}),
        ("shadow", {"shadow": "3"}),
        ("scale", {"replicas": 1}),
        ("autoscale", {"min_replicas": 0, "max_replicas": 3}),
        ("delete", {"confirm": "stale"}),
    ]:
        page = _post(site, url, verb, generation=shown, **data)
        _refused(page, 409, "changed since this page showed it")
        assert _state(site, "stale") == after, verb
    assert f'name="generation" value="{after[0]}"' in page.text  # the page as it is now


def test_set_change_and_remove_the_shadow(site: Site) -> None:
    site.root.create_deployment("shop", "shady", f"{URI}/1", runtime="memory")
    url = f"{PAGE}/shady"
    assert _post(site, url, "shadow", shadow="2", reason="watch v2").status_code == 303
    assert _state(site, "shady")[2] == 2
    site.root.set_model_alias("shop", "churn", "candidate", 3)
    assert _post(site, url, "shadow", shadow="@candidate").status_code == 303
    assert _state(site, "shady")[2] == 3
    before = _state(site, "shady")
    both = _post(site, url, "shadow", shadow="2", remove="true")
    _refused(both, 400, "not both")
    _refused(_post(site, url, "shadow", shadow=""), 400, "give a version")
    assert _state(site, "shady") == before
    page = site.http.get(url).text
    assert 'id="shadow-off-form"' in page
    assert _post(site, url, "shadow", remove="true", reason="enough").status_code == 303
    assert _state(site, "shady")[2] is None
    assert 'id="shadow-off-form"' not in site.http.get(url).text
    assert site.root.deployment_history("shop", "shady")[0].reason == "enough"


def test_scale_and_set_the_autoscalers_bounds(site: Site) -> None:
    site.root.create_deployment("shop", "scaly", f"{URI}/1", runtime="memory")
    url = f"{PAGE}/scaly"
    assert _state(site, "scaly")[3] == (1, 1, 1)
    done = _post(site, url, "autoscale", min_replicas=1, max_replicas=4, reason="room")
    assert done.status_code == 303 and _state(site, "scaly")[3] == (1, 1, 4)
    assert _post(site, url, "scale", replicas=3).status_code == 303
    assert _state(site, "scaly")[3] == (3, 1, 4)
    assert len(site.root.get_deployment("shop", "scaly").replicas) == 3
    before = _state(site, "scaly")
    for verb, data, says in [
        ("scale", {"replicas": 5}, "between min (1) and max (4)"),
        ("scale", {"replicas": -1}, "replicas"),
        ("autoscale", {"min_replicas": 5, "max_replicas": 2}, "exceeds max"),
        ("autoscale", {"min_replicas": 0, "max_replicas": 99}, "max_replicas"),
    ]:
        page = _post(site, url, verb, **data, reason="typed")
        _refused(page, 400, says, 'value="typed"')
        assert _state(site, "scaly") == before, data
    text = site.http.get(url).text
    assert 'name="replicas" required min="1" max="4" value="3"' in text
    assert [e.action for e in site.root.deployment_history("shop", "scaly")][:2] == [
        "scale",
        "update",
    ]


def test_delete_takes_the_name_typed_to_confirm_it(site: Site) -> None:
    site.root.create_deployment("shop", "doomed", f"{URI}/1", runtime="memory")
    url = f"{PAGE}/doomed"
    for typed in ("", "Doomed", "svc"):
        page = _post(site, url, "delete", confirm=typed, reason="not needed")
        _refused(page, 400, "type the deployment's name (doomed)")
        assert '<details class="card danger-zone" id="delete" open>' in page.text
        assert site.root.get_deployment("shop", "doomed").name == "doomed"
    done = _post(site, url, "delete", confirm="doomed", reason="not needed")
    assert done.status_code == 303 and done.headers["location"] == PAGE
    assert site.http.get(url).status_code == 404
    assert f'href="{url}"' not in site.http.get(PAGE).text
    [event] = [
        e for e in site.root.audit_events(project="shop") if e.action == "deployments.delete"
    ]
    assert event.object == "doomed"


FORMS = {
    "promote": {},
    "rollback": {},
    "canary": {"canary": "3", "weight": 5},
    "shadow": {"shadow": "2"},
    "scale": {"replicas": 2},
    "autoscale": {"min_replicas": 0, "max_replicas": 4},
    "delete": {"confirm": "svc"},
}


def test_a_viewer_is_refused_every_form_in_the_page(site: Site) -> None:
    before = _state(site, "svc")
    for verb, data in FORMS.items():
        page = _post(site, f"{PAGE}/svc", verb, site.viewer, **data, reason="mine")
        _refused(page, 403, 'value="mine"')
        assert _state(site, "svc") == before, verb


# traffic arithmetic on the data plane's own Prometheus text ------------------------------


def _served(latencies: list[float], errors: int = 0, version: str = "1") -> observe.Totals:
    """A replica's metrics text, as its app counts requests answered by ``version``."""
    metrics = ServingMetrics(lambda: 0.0)
    for seconds in latencies:
        metrics.answered("v1", version, 200, seconds)
    for _ in range(errors):
        metrics.answered("v1", version, 500, 0.003)
        metrics.failed(500, version)
    return observe.parse(metrics.exposition().decode())


def test_totals_rates_and_percentiles_between_two_readings() -> None:
    earlier = _served([0.003] * 10)
    later = _served([0.003] * 10 + [0.003] * 50 + [0.2] * 50, errors=10)
    assert (later.requests, later.errors, later.replicas) == (120, 10, 1)
    span = observe.between(earlier, later, 10.0, (0.5, 0.99))
    assert span.requests_per_second == pytest.approx(11.0)
    assert span.errors_per_second == pytest.approx(1.0)
    p50, p99 = span.latency_ms[0.5], span.latency_ms[0.99]
    assert p50 is not None and 2 <= p50 <= 5  # in the (2 ms, 5 ms] bucket
    assert p99 is not None and 100 <= p99 <= 250  # in the (100 ms, 250 ms] bucket


def test_each_version_is_counted_apart_and_the_whole_is_their_sum() -> None:
    """Two replicas of a 90/10 split, as their apps count: per version, and in all."""
    one = _served([0.003] * 9, version="1") + _served([0.2] * 1, errors=1, version="2")
    two = _served([0.003] * 18, version="1") + _served([0.2] * 2, version="2")
    both = one + two
    assert both.replicas == 4  # four texts read: two per replica here
    assert {v: c.requests for v, c in both.versions.items()} == {"1": 27.0, "2": 4.0}
    assert both.requests == 31 and both.errors == 1 and both.versions["2"].errors == 1
    later = both + _served([0.003] * 9, version="1") + _served([0.2], version="2")
    span = observe.by_version(both, later, 2.0, (0.5,))
    assert span["1"].requests_per_second == pytest.approx(4.5)
    assert span["2"].requests_per_second == pytest.approx(0.5)
    p50_fast, p50_slow = span["1"].latency_ms[0.5], span["2"].latency_ms[0.5]
    assert p50_fast is not None and p50_fast <= 5 and p50_slow is not None and p50_slow >= 100


def test_an_answer_that_is_no_prediction_counts_for_no_version() -> None:
    metrics = ServingMetrics(lambda: 0.0)
    metrics.failed(404)  # GET /nope
    metrics.answered("v2", "3", 200, 0.01)
    totals = observe.parse(metrics.exposition().decode())
    assert (totals.requests, totals.errors) == (1, 1)
    assert list(totals.versions) == ["3"] and totals.versions["3"].errors == 0


def test_two_replicas_sum_and_a_restart_counts_what_is_there() -> None:
    both = _served([0.001] * 4) + _served([0.001] * 6)
    assert (both.requests, both.replicas) == (10, 2)
    restarted = _served([0.001] * 3)
    span = observe.between(both, restarted, 1.0, (0.5,))
    assert span.requests_per_second == pytest.approx(3.0)
    assert observe.between(restarted, restarted, 1.0, (0.5,)).latency_ms[0.5] is None


@pytest.mark.slow
def test_a_live_deployment_charts_its_traffic(tmp_path: Path) -> None:
    """A real sklearn model on a real replica process: the page reads its /metrics
    through the control plane and draws rate, latency and errors."""
    with Client(settings=make_settings(tmp_path / "home")) as client:
        log_iris(client)
        client.create_deployment("iris", "live", "models:/iris/iris/1")
        try:
            d = deployment_ready(client, "iris", "live")
            http, page = raw_http(client), "/projects/iris/deployments/live"
            assert "the charts start with the next reading" in http.get(page).text
            body = {"instances": [IRIS_ROW]}
            for _ in range(20):
                answer = httpx.post(f"{d.url}/v1/models/iris:predict", json=body, timeout=30)
                assert answer.status_code == 200
            time.sleep(1.1)  # readings closer than a second apart are not kept twice
            fragment = http.get(f"{page}/traffic").text
            assert "Requests per second" in fragment and "Latency (ms)" in fragment
            assert "from 1 replica" in fragment
            assert 'class="swatch color-2"></span>p99' in fragment  # legend: classes, no style
            # one interval so far: each chart has one point, its value in its title
            rate = re.search(r"<title>requests/s: ([0-9.e+-]+)</title>", fragment)
            errors = re.search(r"<title>errors/s: ([0-9.e+-]+)</title>", fragment)
            assert rate is not None and float(rate.group(1)) > 0
            assert errors is not None and float(errors.group(1)) == 0
            assert re.search(r"<title>p99: [0-9.e+-]+</title>", fragment)
            # and by version: the one version answered all twenty
            assert "Requests per second by version" in fragment
            row = re.search(r'<tr data-version="1">.*?</tr>', fragment, re.S)
            assert row is not None and '<td class="num requests">20</td>' in row.group(0)
            assert '<td class="num share">100.0%</td>' in row.group(0)
        finally:
            client.delete_deployment("iris", "live")
