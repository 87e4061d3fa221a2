"""The sessions list's model, token and cost columns and their sort, and a session's
tree (parent, subagents, rolled-up totals): API and page, on real sessions written by
the producer and drained by a real worker (tests/ui/conftest.py, FAMILY_CODE)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.helpers import worker_env
from tests.sqld import Sqld
from tests.ui.browser import UiServer
from tests.ui.conftest import PageErrors, make_family

# What FAMILY_CODE wrote, session by session: (input, output, cache read, cache write, cost)
FIGURES = {
    "lead-1": (1400, 300, 300, 50, 0.75),
    "sub-1": (300, 40, 100, None, 0.125),
    "sub-1a": (50, 5, None, None, 0.02),
    "sub-2": (200, 10, None, None, None),
    "solo-1": (10, 1, None, None, 0.001),
    "plain-1": (None, None, None, None, None),
}
KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd")


def get_json(ui: UiServer, path: str) -> Any:
    status, body, _ = ui.get(path)
    assert status == 200, body
    return json.loads(body)


def ids(ui: UiServer, query: str) -> list[str]:
    return [s["id"] for s in get_json(ui, "/api/sessions" + query)["sessions"]]


def check_list_figures(family_ui: UiServer) -> None:
    rows = {s["id"]: s for s in get_json(family_ui, "/api/sessions")["sessions"]}
    assert {sid: tuple(rows[sid][k] for k in KEYS) for sid in FIGURES} == FIGURES
    assert rows["lead-1"]["model"] == "model-a" and rows["plain-1"]["model"] is None
    assert rows["sub-1a"]["parent_id"] == "sub-1" and rows["lead-1"]["parent_id"] is None


def check_sorts(family_ui: UiServer) -> None:
    assert ids(family_ui, "?sort=cost") == ["lead-1", "sub-1", "sub-1a", "solo-1", "plain-1", "sub-2"]  # fmt: skip
    assert ids(family_ui, "?sort=cost&dir=asc")[:4] == ["solo-1", "sub-1a", "sub-1", "lead-1"]
    assert ids(family_ui, "?sort=cost&dir=asc")[4:] == ["plain-1", "sub-2"]  # no price: last
    assert ids(family_ui, "?sort=input_tokens")[:5] == ["lead-1", "sub-1", "sub-2", "sub-1a", "solo-1"]  # fmt: skip
    assert ids(family_ui, "?sort=output_tokens&dir=asc")[0] == "solo-1"
    assert ids(family_ui, "?sort=tokens")[:3] == ["lead-1", "sub-1", "sub-2"]
    by_model = ids(family_ui, "?sort=model&dir=asc")
    assert by_model[-1] == "plain-1" and set(by_model[:2]) == {"lead-1", "sub-1a"}
    # the sort applies before the page is cut: the second page goes on from the first
    assert ids(family_ui, "?sort=cost&limit=2&offset=2") == ["sub-1a", "solo-1"]
    assert ids(family_ui, "?sort=cost&agent=helper") == ["sub-1", "sub-1a", "sub-2"]
    assert family_ui.get("/api/sessions?sort=price")[0] == 400
    assert family_ui.get("/api/sessions?sort=cost&dir=up")[0] == 400


def check_trees(family_ui: UiServer) -> None:
    tree = get_json(family_ui, "/api/sessions/lead-1/tree")
    assert tree["parent"] is None and tree["truncated"] is False
    assert [c["id"] for c in tree["children"]] == ["sub-1", "sub-2"]
    assert [g["id"] for g in tree["children"][0]["children"]] == ["sub-1a"]
    assert tree["children"][0]["status"] == "completed"
    assert tree["children"][0]["children"][0]["status"] == "error"
    assert all(c["duration_ms"] is not None for c in tree["children"])
    totals = tree["totals"]
    assert totals["own"] == {
        "sessions": 1, "input_tokens": 1400, "output_tokens": 300, "cache_read_tokens": 300,
        "cache_write_tokens": 50, "cost_usd": 0.75, "unpriced": 0,
    }  # fmt: skip
    assert totals["descendants"] == {
        "sessions": 3, "input_tokens": 550, "output_tokens": 55, "cache_read_tokens": 100,
        "cache_write_tokens": None, "cost_usd": 0.125 + 0.02, "unpriced": 1,
    }  # fmt: skip
    assert totals["all"]["input_tokens"] == 1950 and totals["all"]["unpriced"] == 1
    assert abs(totals["all"]["cost_usd"] - 0.895) < 1e-9

    middle = get_json(family_ui, "/api/sessions/sub-1/tree")
    assert middle["parent"]["id"] == "lead-1"
    assert [c["id"] for c in middle["children"]] == ["sub-1a"]
    assert middle["totals"]["all"]["output_tokens"] == 45
    alone = get_json(family_ui, "/api/sessions/solo-1/tree")
    assert alone["parent"] is None and alone["children"] == []


def check_stats(ui: UiServer, page: Any) -> None:
    """/api/stats (compute_stats over this source) adds up to what FAMILY_CODE wrote,
    and the stats page shows the API's figures."""
    totals = get_json(ui, "/api/stats?by=day,agent")["totals"]
    for i, key in enumerate(KEYS[:4]):
        known = [f[i] for f in FIGURES.values() if f[i] is not None]
        assert totals[key] == sum(known), key
    assert abs(totals["cost_usd"] - (0.75 + 0.125 + 0.02 + 0.001)) < 1e-9
    assert totals["sessions"] == len(FIGURES) and totals["sessions_unpriced"] == 1  # sub-2
    assert (totals["tool_calls"], totals["tool_errors"]) == (1, 0)
    page.goto(ui.url + "/stats")
    expect(page.locator('.figure[data-figure="input_tokens"] .value')).to_have_text("1,960")
    expect(page.locator('.figure[data-figure="cost_usd"] .value')).to_have_text("$0.8960")
    expect(page.locator("#chart-sessions rect.seg")).to_have_count(3)  # lead, helper, solo


def test_the_list_carries_model_tokens_and_cost(family_ui: UiServer) -> None:
    check_list_figures(family_ui)


def test_the_stats_add_up_over_the_replicas(family_ui: UiServer, page: Any) -> None:
    check_stats(family_ui, page)


def test_the_list_sorts_on_the_server_unknown_last_both_ways(family_ui: UiServer) -> None:
    check_sorts(family_ui)


def test_a_session_tree_with_rolled_up_totals(family_ui: UiServer) -> None:
    check_trees(family_ui)


def test_the_same_from_the_remote_database(
    spool: Path, sqld: Sqld, page: Any, page_errors: PageErrors
) -> None:
    """`ui --remote` over a real sqld: the sort in the database's ORDER BY, the tree
    walked by a recursive query, the stats in the database's SQL: the same figures as
    from the replicas."""
    env = worker_env(spool, sqld.url)
    make_family(spool, env)
    shutil.rmtree(spool / "replicas")  # the viewer must read the database
    ui = UiServer(spool, "--remote", env=env)
    try:
        check_list_figures(ui)
        check_sorts(ui)
        check_trees(ui)
        check_stats(ui, page)
        page.goto(ui.url + "/s/sub-1")
        expect(page.locator('#tree-box .parent .tree-line[data-session="lead-1"]')).to_be_visible()
        expect(page.locator('#tree-box tr[data-total="all"] .output')).to_have_text("45")
        page.goto(ui.url + "/?sort=cost")
        expect(page.locator("#rows tr").first).to_have_attribute("data-session", "lead-1")
        expect(page.locator("#rows tr").first.locator(".cost")).to_have_text("$0.7500")
        assert not page_errors
    finally:
        ui.stop()


def test_the_same_from_the_embedded_database_file(
    family_spool: Path, page: Any, page_errors: PageErrors
) -> None:
    """`ui --remote` without a URL: the spool's embedded database (a `file:` URL, read
    with sqlite3 read-only), which the fixture's `worker run --burst` synced to."""
    ui = UiServer(family_spool, "--remote")
    try:
        assert get_json(ui, "/api/info")["source"]["kind"] == "remote"
        check_list_figures(ui)
        check_sorts(ui)
        check_trees(ui)
        check_stats(ui, page)
        assert not page_errors
    finally:
        ui.stop()


def test_the_list_page_shows_and_sorts_the_columns(
    family_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    api = {s["id"]: s for s in get_json(family_ui, "/api/sessions")["sessions"]}
    page.goto(family_ui.url + "/")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(6)
    lead = page.locator('#rows tr[data-session="lead-1"]')
    expect(lead.locator(".model")).to_have_text("model-a")
    expect(lead.locator(".input-tokens")).to_have_text(f"{api['lead-1']['input_tokens']:,}")
    expect(lead.locator(".output-tokens")).to_have_text(f"{api['lead-1']['output_tokens']:,}")
    expect(lead.locator(".cost")).to_have_text("$0.7500")
    expect(page.locator('#rows tr[data-session="sub-2"] .cost')).to_have_text("-")

    page.click('button.sort[data-sort="cost"]')
    expect(rows.first).to_have_attribute("data-session", "lead-1")
    assert "sort=cost" in page.url
    order = [rows.nth(i).get_attribute("data-session") for i in range(6)]
    assert order == ids(family_ui, "?sort=cost")
    page.click('button.sort[data-sort="cost"]')  # again: the other way round
    expect(rows.first).to_have_attribute("data-session", "solo-1")
    assert "dir=asc" in page.url
    page.click('button.sort[data-sort="input_tokens"]')
    expect(rows.nth(2)).to_have_attribute("data-session", "sub-2")
    assert [rows.nth(i).get_attribute("data-session") for i in range(6)] == ids(
        family_ui, "?sort=input_tokens"
    )
    # the sort is kept in the URL: a reload shows the same order
    page.reload()
    expect(page.locator('button.sort[data-sort="input_tokens"]')).to_have_class("sort active")
    expect(rows.nth(2)).to_have_attribute("data-session", "sub-2")
    assert not page_errors


def test_the_session_page_shows_its_tree_and_totals(
    family_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    tree = get_json(family_ui, "/api/sessions/lead-1/tree")
    page.goto(family_ui.url + "/s/lead-1")
    box = page.locator("#tree-box")
    expect(box).to_be_visible()
    expect(page.locator("#tree-note")).to_have_text("3 subagent sessions")
    sub1 = box.locator('.tree-line[data-session="sub-1"]')
    expect(sub1.locator(".badge")).to_have_text("completed")
    expect(sub1.locator(".tokens")).to_have_text("300 in / 40 out")
    expect(sub1.locator(".cost")).to_have_text("$0.1250")
    nested = box.locator(
        'li:has(> .tree-line[data-session="sub-1"]) .tree-line[data-session="sub-1a"]'
    )
    expect(nested.locator(".badge")).to_have_text("error")
    expect(box.locator('.tree-line[data-session="sub-2"] .cost')).to_have_text("-")
    for key, figures in tree["totals"].items():
        row = box.locator(f'table.totals tr[data-total="{key}"]')
        expect(row.locator(".input")).to_have_text(f"{figures['input_tokens']:,}")
        expect(row.locator(".output")).to_have_text(f"{figures['output_tokens']:,}")
        expect(row.locator(".cost")).to_contain_text(f"${figures['cost_usd']:.4f}")
    expect(box.locator('tr[data-total="all"] .cost')).to_have_text(
        "$0.8950 + 1 session without a price"
    )
    expect(box.locator('tr[data-total="descendants"] .cache-write')).to_have_text("-")

    box.locator('.tree-line[data-session="sub-1"] a').click()
    expect(page).to_have_url(family_ui.url + "/s/sub-1")
    parent = page.locator("#tree-box .parent")
    expect(parent.locator('.tree-line[data-session="lead-1"] .cost')).to_have_text("$0.7500")
    expect(page.locator('#tree-box .tree-line.here[data-session="sub-1"]')).to_be_visible()
    page.goto(family_ui.url + "/s/solo-1")
    expect(page.locator("#agent")).to_have_text("solo")
    expect(page.locator("#tree-box")).to_be_hidden()
    assert not page_errors


def test_a_version_1_database_lists_and_has_trees_without_figures(
    spool: Path, page: Any, page_errors: PageErrors
) -> None:
    """A database no version-2 worker wrote to (schema/001 only): no model, token,
    cost or parent columns. Every sort is then the default order (all values are
    unknown) and a session's tree is the session alone."""
    import sqlite3

    import agentspool.schema as schema
    from agentspool.worker import migrations

    conn = sqlite3.connect(spool / "agentspool.db", isolation_level=None)
    conn.execute(migrations.VERSION_TABLE)
    conn.executescript((Path(schema.__file__).parent / "001_init.sql").read_text())
    conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (1, 'then')")
    for n in range(3):
        conn.execute(
            "INSERT INTO sessions (id, agent, status, started_at) VALUES (?, 'old', 'completed', ?)",
            (f"v1-{n}", f"2026-01-0{n + 1}T00:00:00.000Z"),
        )
    conn.close()
    ui = UiServer(spool, "--remote")
    try:
        newest = ["v1-2", "v1-1", "v1-0"]
        assert ids(ui, "") == newest
        assert ids(ui, "?sort=cost") == newest and ids(ui, "?sort=model&dir=asc") == newest
        assert ids(ui, "?dir=asc") == newest[::-1]
        assert get_json(ui, "/api/sessions")["sessions"][0]["cost_usd"] is None
        tree = get_json(ui, "/api/sessions/v1-1/tree")
        assert (tree["parent"], tree["children"], tree["session"]["id"]) == (None, [], "v1-1")
        page.goto(ui.url + "/?sort=cost")
        expect(page.locator("#rows tr")).to_have_count(3)
        expect(page.locator("#rows tr").first.locator(".cost")).to_have_text("-")
        page.goto(ui.url + "/s/v1-1")
        expect(page.locator("#agent")).to_have_text("old")
        expect(page.locator("#tree-box")).to_be_hidden()
        assert not page_errors
    finally:
        ui.stop()
