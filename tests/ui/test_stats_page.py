"""The stats page in a real browser: its figures, charts and tool table are the API's
(`/api/stats`, the dict of `stats --json`), its filters are the sessions page's and
stay in the URL. Data: the session family and two sessions of earlier days
(tests/ui/conftest.py), written by the producer and `emit`, drained by the worker."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import expect

from tests.ui.browser import UiServer
from tests.ui.conftest import HISTORY, PageErrors

FIGURES = (
    "sessions", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cost_usd", "tool_calls", "tool_error_rate", "tool_duration_p50_ms", "tool_duration_p95_ms",
)  # fmt: skip


def stats(ui: UiServer, **params: str) -> Any:
    status, body, _ = ui.get("/api/stats?" + urlencode(params))
    assert status == 200, body
    return json.loads(body)


def cost_text(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def drawn(page: Any) -> None:
    """Wait until the page has drawn the answer to its latest choice of filters."""
    expect(page.locator("#totals .figure").first).to_be_visible()
    expect(page.locator("body[data-loading]")).to_have_count(0)


def check_totals(page: Any, totals: dict[str, Any]) -> None:
    for key in FIGURES:
        box = page.locator(f'.figure[data-figure="{key}"]')
        assert json.loads(box.get_attribute("data-value")) == totals[key], key
    expect(page.locator('.figure[data-figure="sessions"] .value')).to_have_text(
        f"{totals['sessions']:,}"
    )
    expect(page.locator('.figure[data-figure="input_tokens"] .value')).to_have_text(
        f"{totals['input_tokens']:,}"
    )
    expect(page.locator('.figure[data-figure="cost_usd"] .value')).to_have_text(
        cost_text(totals["cost_usd"])
    )


def segments(page: Any, chart: str) -> dict[tuple[str, str], float]:
    rects = page.locator(f"#{chart} rect.seg")
    return {
        (r.get_attribute("data-day"), r.get_attribute("data-series")): float(
            r.get_attribute("data-value")
        )
        for r in rects.all()
    }


def expected(groups: list[dict[str, Any]], stack: str, value: Any) -> dict[tuple[str, str], float]:
    out = {}
    for g in groups:
        v = value(g)
        if v:
            out[(g["day"], g[stack] or "(none)")] = float(v)
    return out


def test_the_figures_charts_and_tools_are_the_apis(
    stats_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    by_day = stats(stats_ui, by="day,agent")
    by_tool = stats(stats_ui, by="tool")
    assert by_day["totals"]["sessions"] == 6 + len(HISTORY)
    # What the page asks for its charts: the same, less the groups' tool figures.
    charts = stats(stats_ui, by="day,agent", tool_groups="0")
    tool_keys = {k for k in by_day["groups"][0] if k.startswith("tool_")}
    assert charts["totals"] == by_day["totals"] and len(tool_keys) == 5
    assert charts["groups"] == [
        {k: v for k, v in g.items() if k not in tool_keys} for g in by_day["groups"]
    ]
    assert stats_ui.get("/api/stats?tool_groups=2")[0] == 400
    page.goto(stats_ui.url + "/stats")
    drawn(page)
    check_totals(page, by_day["totals"])
    expect(page.locator('.figure[data-figure="cost_usd"] .note')).to_have_text(
        f"{by_day['totals']['sessions_unpriced']} sessions without a price"
    )

    # three charts, stacked by agent: one segment per (day, agent) with a value
    groups = by_day["groups"]
    assert len({g["day"] for g in groups}) == 3  # today and two earlier days
    assert segments(page, "chart-sessions") == expected(groups, "agent", lambda g: g["sessions"])
    assert segments(page, "chart-tokens") == expected(
        groups, "agent", lambda g: (g["input_tokens"] or 0) + (g["output_tokens"] or 0)
    )
    assert segments(page, "chart-cost") == expected(groups, "agent", lambda g: g["cost_usd"])
    assert page.locator("#chart-sessions g.bar").count() == 3
    legend = page.locator("#legend li")
    assert sorted(legend.nth(i).get_attribute("data-series") for i in range(legend.count())) == [
        "helper", "lead", "solo",
    ]  # fmt: skip
    title = page.locator('#chart-sessions rect.seg[data-series="helper"] title')
    assert title.text_content().endswith("helper: 3")

    # the tools table, most calls first
    rows = page.locator("#tool-rows tr")
    expect(rows).to_have_count(len(by_tool["groups"]))
    for i, g in enumerate(by_tool["groups"]):
        row = rows.nth(i)
        expect(row.locator(".name")).to_have_text(g["tool"])
        expect(row.locator(".calls")).to_have_text(str(g["tool_calls"]))
        expect(row.locator(".errors")).to_have_text(str(g["tool_errors"]))
        expect(row.locator(".error-rate")).to_have_text(f"{g['tool_error_rate'] * 100:.1f} %")
        assert (
            json.loads(row.locator(".p95").get_attribute("data-value")) == g["tool_duration_p95_ms"]
        )
    run_tests = page.locator('#tool-rows tr[data-tool="run_tests"]')
    expect(run_tests.locator(".p50")).to_have_text("120 ms")
    expect(run_tests.locator(".error-rate")).to_have_text("100.0 %")
    assert not page_errors


def test_stacked_by_model_and_filtered_like_the_sessions_page(
    stats_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(stats_ui.url + "/stats")
    drawn(page)
    page.select_option("#f-stack", "model")
    expect(page).to_have_url(stats_ui.url + "/stats?stack=model")
    by_model = stats(stats_ui, by="day,model")
    expect(page.locator('#legend li[data-series="model-b"]')).to_be_visible()
    assert segments(page, "chart-sessions") == expected(
        by_model["groups"], "model", lambda g: g["sessions"]
    )
    assert any(s == "(none)" for _, s in segments(page, "chart-sessions"))  # plain-1

    page.select_option("#f-agent", "lead")
    expect(page.locator('.figure[data-figure="sessions"] .value')).to_have_text("2")
    assert "agent=lead" in page.url and "stack=model" in page.url
    drawn(page)
    check_totals(page, stats(stats_ui, by="day,model", agent="lead")["totals"])
    page.select_option("#f-since", "24h")
    lead_today = stats(stats_ui, by="day,model", agent="lead", since="24h")["totals"]
    expect(page.locator('.figure[data-figure="sessions"] .value')).to_have_text(
        str(lead_today["sessions"])
    )
    assert lead_today["sessions"] == 1  # old-2 started two days ago

    # the same filters on the sessions page, one click away, and back
    page.click("#to-sessions")
    expect(page).to_have_url(stats_ui.url + "/?agent=lead&since=24h")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(page.locator("#rows tr").first).to_have_attribute("data-session", "lead-1")
    page.click("#nav-stats")
    expect(page).to_have_url(stats_ui.url + "/stats?agent=lead&since=24h")
    expect(page.locator('.figure[data-figure="sessions"] .value')).to_have_text("1")
    assert not page_errors


def test_every_page_links_to_the_stats(stats_ui: UiServer, page: Any) -> None:
    for path in ("/", "/s/lead-1", "/stats"):
        page.goto(stats_ui.url + path)
        expect(page.locator("header nav a", has_text="stats")).to_have_attribute("href", "/stats")
    assert stats_ui.get("/api/stats?by=bogus")[0] == 400
    assert stats_ui.get("/api/stats?status=bogus")[0] == 400


def test_an_empty_spool_has_a_stats_page_too(
    spool: Any, page: Any, page_errors: PageErrors
) -> None:
    ui = UiServer(spool)
    try:
        page.goto(ui.url + "/stats")
        drawn(page)
        expect(page.locator('.figure[data-figure="sessions"] .value')).to_have_text("0")
        expect(page.locator('.figure[data-figure="cost_usd"] .value')).to_have_text("-")
        expect(page.locator("#chart-note")).to_have_text("no sessions")
        expect(page.locator("#tools-note")).to_have_text("no tool calls")
        assert page.locator("svg.chart rect.seg").count() == 0
        assert not page_errors
    finally:
        ui.stop()
