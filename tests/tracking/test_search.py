from __future__ import annotations

import pytest

import plinth
from plinth.client import Client
from plinth.tracking.search import BoolOp, Comparison, Field, parse_filter, parse_order_by


def _sweep(client: Client, project: str) -> dict[str, str]:
    ids = {}
    for lr in (0.01, 0.1, 1.0):
        for opt in ("adam", "sgd"):
            run = client.create_run(
                project,
                name=f"{opt}-{lr}",
                params={"lr": lr, "opt": opt},
                tags={"team": "a" if opt == "adam" else "b"},
            )
            acc = lr / 2 + (0.1 if opt == "adam" else 0.0)
            client.log_batch(
                run.id, metrics=[{"key": "acc", "value": acc, "step": 0, "timestamp": 1.0}]
            )
            ids[f"{opt}-{lr}"] = run.id
    return ids


def names(page: plinth.Client | object) -> list[str]:
    return [r.name for r in page.runs]  # type: ignore[attr-defined]


def test_filter_and_order(client: Client, project: str) -> None:
    _sweep(client, project)
    page = client.search_runs(
        project, filter="metrics.acc > 0.09 and params.opt = 'adam'", order_by="metrics.acc desc"
    )
    assert names(page) == ["adam-1.0", "adam-0.1", "adam-0.01"]
    page = client.search_runs(project, filter="params.lr = 0.1")
    assert sorted(names(page)) == ["adam-0.1", "sgd-0.1"]
    page = client.search_runs(
        project, filter="params.lr < 0.5 and tags.team = 'b'", order_by="params.lr asc"
    )
    assert names(page) == ["sgd-0.01", "sgd-0.1"]
    page = client.search_runs(
        project,
        filter="(tags.team = 'a' and params.lr >= 1) or name like 'sgd-0.0%'",
        order_by="name",
    )
    assert names(page) == ["adam-1.0", "sgd-0.01"]
    page = client.search_runs(project, filter="status = 'running'", order_by="params.lr desc, name")
    assert names(page)[:2] == ["adam-1.0", "sgd-1.0"]


def test_runs_missing_the_order_metric_sort_last(client: Client, project: str) -> None:
    _sweep(client, project)
    client.create_run(project, name="no-metrics")
    for direction in ("asc", "desc"):
        page = client.search_runs(project, order_by=f"metrics.acc {direction}")
        assert names(page)[-1] == "no-metrics"


def test_pagination_walks_every_run_once(client: Client, project: str) -> None:
    ids = set(_sweep(client, project).values())
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs(project, order_by="metrics.acc desc", limit=4, page_token=token)
        seen += [r.id for r in page.runs]
        token = page.next_page_token
        if token is None:
            break
    assert len(seen) == len(ids) and set(seen) == ids


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.acc > 0.9; DROP TABLE runs",
        "metrics.acc > 0.9 -- comment",
        "metrics.acc > 0.9 or 1=1",
        "params.lr = 0.1' OR '1'='1",
        "metrics.acc > (SELECT 1)",
        "bogus.x = 1",
        "unknown_attr = 1",
        "metrics.acc >",
        "metrics.acc like 'x'",
        "status = 1",
        "metrics.acc > 0.9 and",
    ],
)
def test_bad_filters_are_refused(client: Client, project: str, bad: str) -> None:
    _sweep(client, project)
    with pytest.raises(plinth.InvalidInput):
        client.search_runs(project, filter=bad)
    assert len(client.search_runs(project).runs) == 6


def test_search_in_unknown_project_is_404(client: Client) -> None:
    with pytest.raises(plinth.NotFound):
        client.search_runs("nope-never-created")


def test_parser_builds_the_tree() -> None:
    node = parse_filter('metrics.`val/acc` >= 0.5 and (params.lr = 1e-3 or tag.x != "y")')
    assert node == BoolOp(
        "and",
        (
            Comparison(Field("metrics", "val/acc"), ">=", 0.5),
            BoolOp(
                "or",
                (
                    Comparison(Field("params", "lr"), "=", 0.001),
                    Comparison(Field("tags", "x"), "!=", "y"),
                ),
            ),
        ),
    )
    assert parse_filter("  ") is None
    order = parse_order_by("metrics.acc desc, start_time")
    assert [(k.field, k.descending) for k in order] == [
        (Field("metrics", "acc"), True),
        (Field("attr", "start_time"), False),
    ]
    with pytest.raises(plinth.InvalidInput):
        parse_order_by("metrics.acc sideways")


def test_numeric_comparisons_skip_values_that_are_not_numbers(client: Client, project: str) -> None:
    values = [("text", "vision"), ("five", 5), ("huge", 10**400), ("flag", True), ("neg", -2.5)]
    for name, value in values:
        client.create_run(project, name=name, params={"v": value}, tags={"v": str(value)[:20]})
    assert names(client.search_runs(project, filter="params.v > 0", order_by="name")) == ["five"]
    assert names(client.search_runs(project, filter="params.v != 5", order_by="name")) == ["neg"]
    assert names(client.search_runs(project, filter="tags.v < 10", order_by="name")) == [
        "five",
        "neg",
    ]
    assert names(client.search_runs(project, filter="tags.v = 'vision'")) == ["text"]
    assert names(client.search_runs(project, filter="params.v = 'vision'")) == ["text"]
    assert names(client.search_runs(project, filter="params.v = true")) == ["flag"]
    ascending = names(client.search_runs(project, order_by="params.v asc"))
    descending = names(client.search_runs(project, order_by="params.v desc"))
    assert ascending[:2] == ["neg", "five"] and descending[:2] == ["five", "neg"]
    assert set(ascending[2:]) == set(descending[2:]) == {"text", "huge", "flag"}


def test_long_param_values_are_stored_and_oversized_ones_refused(
    client: Client, project: str
) -> None:
    run = client.create_run(project, params={"prompt": "x" * 10_000})
    assert client.get_run(run.id).params["prompt"] == "x" * 10_000
    with pytest.raises(plinth.InvalidInput, match="holds at most 65,536 characters"):
        client.create_run(project, params={"prompt": "x" * 70_000})


def test_param_values_nested_past_a_limit_are_refused(client: Client, project: str) -> None:
    def nested(depth: int) -> object:
        value: object = {"leaf": 1}
        for _ in range(depth - 1):
            value = [value]
        return value

    run = client.create_run(project, params={"deep": nested(32)})
    assert client.get_run(run.id).params["deep"] is not None
    with pytest.raises(plinth.InvalidInput, match="nests at most 32"):
        client.create_run(project, params={"deep": nested(300)})
    assert len(client.search_runs(project)) == 1


def test_like_is_case_sensitive_everywhere(client: Client, project: str) -> None:
    client.create_run(project, name="upper", tags={"team": "Vision"}, params={"m": "Vit"})
    client.create_run(project, name="lower", tags={"team": "vision"}, params={"m": "vit"})
    assert names(client.search_runs(project, filter="tags.team like 'vis%'")) == ["lower"]
    assert names(client.search_runs(project, filter="params.m like 'V%'")) == ["upper"]


@pytest.mark.parametrize("bad", ["(" * 200 + "status = 'x'" + ")" * 200, "(status = 'x' ("])
def test_deep_or_unbalanced_parentheses_are_refused(client: Client, project: str, bad: str) -> None:
    client.create_run(project)
    with pytest.raises(plinth.InvalidInput):
        client.search_runs(project, filter=bad)


def test_bad_page_tokens_are_refused(client: Client, project: str) -> None:
    from plinth.tracking.search import encode_page_token

    client.create_run(project)
    for token in (encode_page_token(2**63), "not-base64!", encode_page_token(True)):  # type: ignore[arg-type]
        with pytest.raises(plinth.InvalidInput):
            client.search_runs(project, page_token=token)


def test_a_page_is_a_sequence_of_runs(client: Client, project: str) -> None:
    _sweep(client, project)
    page = client.search_runs(project, order_by="name", limit=4)
    assert len(page) == 4
    assert [run.name for run in page] == names(page)
    assert page[0].name == "adam-0.01" and page[-1] is page.runs[-1]
    assert [run.name for run in page[1:3]] == ["adam-0.1", "adam-1.0"]
    assert page.next_page_token is not None and page.token == page.next_page_token
    rest = client.search_runs(project, order_by="name", limit=4, page_token=page.token)
    assert [run.name for run in rest] == ["sgd-0.1", "sgd-1.0"] and rest.next_page_token is None
    assert not client.search_runs(project, filter="params.opt = 'none'")  # empty is falsy


def _found(client: Client, project: str, filter: str) -> list[str]:
    return sorted(names(client.search_runs(project, filter=filter)))


def test_quoted_numbers_and_booleans_match_typed_values(client: Client, project: str) -> None:
    """MLflow keeps params as text, so its users quote numbers and booleans."""
    client.create_run(
        project, name="typed", params={"alpha": 0.01, "flag": True, "n": 3}, tags={"ok": "True"}
    )
    client.create_run(
        project, name="text", params={"alpha": "0.01", "flag": "false", "n": "3"}, tags={"ok": "x"}
    )
    client.create_run(
        project, name="other", params={"alpha": 0.5, "flag": False, "n": 30}, tags={"ok": "false"}
    )
    assert _found(client, project, "params.alpha = '0.01'") == ["text", "typed"]
    assert _found(client, project, "params.alpha = 0.01") == ["typed"]
    assert _found(client, project, "params.alpha != '0.01'") == ["other"]
    assert _found(client, project, "params.n < '10'") == ["typed"]  # as numbers, not text
    assert _found(client, project, "params.flag = true") == ["typed"]
    assert _found(client, project, "params.flag = 'True'") == ["typed"]
    assert _found(client, project, "params.flag = FALSE") == ["other"]
    assert _found(client, project, "params.flag = 'false'") == ["other", "text"]
    assert _found(client, project, "params.flag != true") == ["other", "text"]
    assert _found(client, project, "tags.ok = true") == ["typed"]  # set_tag(k, True) is "True"
    assert _found(client, project, "tags.ok = 'false'") == ["other"]
    assert _found(client, project, "params.n = 3") == ["typed"]  # a bare number is a number
    with pytest.raises(plinth.InvalidInput, match="true and false compare with = or !="):
        client.search_runs(project, filter="params.flag < true")


def test_status_compares_regardless_of_case(client: Client, project: str) -> None:
    done = client.create_run(project, name="done")
    client.end_run(done.id)
    client.create_run(project, name="live")
    assert _found(client, project, "status = 'FINISHED'") == ["done"]
    assert _found(client, project, "attributes.status != 'Finished'") == ["live"]
    with pytest.raises(plinth.InvalidInput, match="status is one of running, finished, failed"):
        client.search_runs(project, filter="status = 'DONE'")


def test_a_key_no_run_has_is_named_with_the_keys_there_are(client: Client, project: str) -> None:
    run = client.create_run(project, params={"lr": 0.1}, tags={"team": "a"})
    points = [{"key": k, "value": 0.5, "step": 0, "timestamp": 1.0} for k in ("val_acc", "loss")]
    client.log_batch(run.id, metrics=points)
    elsewhere = client.create_run(f"{project}-b", params={"alpha": 1})
    client.log_batch(elsewhere.id, metrics=[{"key": "acc", "value": 1.0}])
    with pytest.raises(plinth.InvalidInput) as caught:
        client.search_runs(project, filter="params.lr > 0 and metrics.acc > 0.5")
    assert caught.value.message == (
        f"filter: no run in project {project} has metric 'acc'; known metrics: loss, val_acc"
    )
    with pytest.raises(plinth.InvalidInput, match=r"^order_by: .* 'alpha'; known params: lr$"):
        client.search_runs(project, order_by="params.alpha")
    with pytest.raises(plinth.InvalidInput, match=r"has tag 'tem'; known tags: team$"):
        client.search_runs(project, filter="tags.tem = 'a'")
    assert len(client.search_runs(project, filter="metrics.loss > 100")) == 0  # known, no match


@pytest.mark.parametrize(
    "bad", ["metrics.acc sideways", "bogus.x", "nope", "name desc more", "metrics.`acc", "name ="]
)
def test_order_by_errors_say_order_by(client: Client, project: str, bad: str) -> None:
    client.create_run(project)
    with pytest.raises(plinth.InvalidInput, match=r"^order_by: "):
        client.search_runs(project, order_by=bad)


def test_order_by_names_a_key_once_and_at_most_ten(client: Client, project: str) -> None:
    """A key named again adds nothing (the first decides); eleven keys are refused. A
    join and many ORDER BY terms crashed SQLite 3.40 with a viewer's one request."""
    client.create_run(project, name="up", params={f"p{i}": i for i in range(11)})
    client.create_run(project, name="down", params={f"p{i}": -i for i in range(11)})
    again = ", ".join(["params.p1 desc", *["params.p1", "params.p2"] * 40])
    assert names(client.search_runs(project, order_by=again)) == ["up", "down"]
    ten = ", ".join(f"params.p{i}" for i in range(1, 11))
    assert names(client.search_runs(project, order_by=ten)) == ["down", "up"]
    with pytest.raises(plinth.InvalidInput, match=r"^order_by: at most 10 keys$"):
        client.search_runs(project, order_by=f"{ten}, name")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("params.lr =", "filter: params.lr = needs a value: a number or a quoted string"),
        (
            "params.lr = and status = 'running'",
            "filter: params.lr = needs a value: a number or a quoted string, got 'and'",
        ),
        (
            "metrics.`val/acc` >=",
            "filter: metrics.`val/acc` >= needs a value: a number or a quoted string",
        ),
    ],
)
def test_an_empty_right_hand_side_says_what_is_missing(
    client: Client, project: str, bad: str, message: str
) -> None:
    client.create_run(project, params={"lr": 0.1})
    with pytest.raises(plinth.InvalidInput) as caught:
        client.search_runs(project, filter=bad)
    assert caught.value.message == message
