"""The viewer in a real browser: the sessions list, a session page with its timeline,
prefix URLs, long and many items, and untrusted text shown as text."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.ui.browser import UiServer
from tests.ui.conftest import BIG_MESSAGES, PageErrors


def test_the_list_shows_every_session_newest_first(
    ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(ui.url + "/")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(4)
    assert [rows.nth(i).get_attribute("data-session") for i in range(4)] == [
        "big-1", "evil-1", "alpha-0002", "alpha-0001",
    ]  # fmt: skip
    first = page.locator('#rows tr[data-session="alpha-0001"]')
    expect(first.locator(".badge")).to_have_text("completed")
    expect(first.locator(".badge")).to_have_class("badge st-completed")
    expect(first.locator(".messages")).to_have_text("3")
    expect(first.locator(".tools")).to_have_text("2")
    expect(first).to_contain_text("synced")
    expect(page.locator('.chip[data-status="completed"] .n')).to_have_text("2")
    expect(page.locator('.chip[data-status="error"] .n')).to_have_text("2")

    page.select_option("#f-agent", "alpha")
    expect(rows).to_have_count(1)
    assert "agent=alpha" in page.url
    page.select_option("#f-agent", "")
    page.fill("#f-q", "needle")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-session", "alpha-0002")
    page.fill("#f-q", "")
    expect(rows).to_have_count(4)
    page.click('.chip[data-status="error"]')
    expect(rows).to_have_count(2)
    page.click('#rows tr[data-session="alpha-0002"] a')
    expect(page).to_have_url(ui.url + "/s/alpha-0002")
    expect(page.locator("#status")).to_have_text("error")
    assert not page_errors


def test_a_session_page_with_its_timeline(ui: UiServer, page: Any, page_errors: PageErrors) -> None:
    page.goto(ui.url + "/s/alpha-0001")
    expect(page.locator("#agent")).to_have_text("alpha")
    items = page.locator("#transcript > li")
    expect(items).to_have_count(5)
    kinds = [items.nth(i).get_attribute("class") for i in range(5)]
    assert ["user" in kinds[0], "tool" in kinds[1], "tool" in kinds[2]] == [True, True, True]
    failed = page.locator('#transcript li.tool[data-call] >> text="run_tests"').locator(
        "xpath=ancestor::li"
    )
    expect(failed.locator(".badge")).to_have_text("error")
    expect(failed.locator(".tool-error")).to_contain_text("1 failed: test_last_page")
    expect(failed.locator(".tool-input")).to_contain_text('"path": "tests/"')

    # the waterfall: one bar per call, coloured by status, positioned in order
    bars = page.locator(".tl-bar")
    expect(bars).to_have_count(2)
    expect(bars.nth(0)).to_have_class("tl-bar st-completed")
    expect(bars.nth(1)).to_have_class("tl-bar st-error")
    x0 = bars.nth(0).bounding_box()["x"]
    x1 = bars.nth(1).bounding_box()["x"]
    assert x1 > x0
    bars.nth(1).hover()
    expect(page.locator("#tooltip")).to_be_visible()
    expect(page.locator("#tooltip")).to_contain_text("run_tests")
    expect(page.locator("#tooltip")).to_contain_text("1 failed")
    bars.nth(0).click()
    detail = page.locator("#tl-detail")
    expect(detail).to_contain_text("read_file")
    expect(detail).to_contain_text("def page(items, n)")

    # the side panel: model, token usage (summed over messages), cwd, metadata
    side = page.locator("#side")
    expect(side).to_contain_text("model-x")
    expect(side).to_contain_text("150 in, 25 out (175)")
    expect(side).to_contain_text("/src/project")
    expect(side).to_contain_text("T-1")

    # a long message comes folded, as a preview; unfolding fetches the whole text
    long = page.locator("#transcript li.message", has_text="LONG:")
    fold = long.locator("button.fold")
    expect(fold).to_have_text("show all 10,005 characters")
    assert len(long.locator("pre").text_content()) < 10_005
    fold.click()
    expect(fold).to_have_text("show less")
    assert len(long.locator("pre").text_content()) == 10_005
    assert not page_errors


def test_a_unique_prefix_opens_the_session_and_an_ambiguous_one_says_so(
    ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(ui.url + "/s/ev")
    expect(page.locator("#sid")).to_have_text("evil-1")
    expect(page).to_have_url(ui.url + "/s/evil-1")
    page.goto(ui.url + "/s/alpha-")
    expect(page.locator("#error")).to_contain_text("alpha-0001, alpha-0002")
    expect(page.locator("#page")).to_be_hidden()
    page.locator("#error a", has_text="alpha-0002").click()
    expect(page).to_have_url(ui.url + "/s/alpha-0002")
    expect(page.locator("#sid")).to_have_text("alpha-0002")
    page.goto(ui.url + "/s/nothing-like-it")
    expect(page.locator("#error")).to_contain_text("No session 'nothing-like-it'")


def test_agent_output_is_shown_as_text_and_never_runs(
    ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(ui.url + "/")
    expect(page.locator('#rows tr[data-session="evil-1"] .agent')).to_have_text("<b>evil</b>")
    page.goto(ui.url + "/s/evil-1")
    message = page.locator("#transcript li.message pre")
    expect(message).to_have_text(
        '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    )
    tool = page.locator("#transcript li.tool")
    expect(tool.locator(".tool-name b")).to_have_text("<i>tool</i>")
    expect(tool.locator(".tool-output pre")).to_have_text("</pre><b>bold</b>")
    expect(tool.locator(".tool-input pre")).to_have_text("<script>window.__pwned = 3</script>")
    expect(page.locator("#side")).to_contain_text("<script>window.__pwned = 4</script>")
    expect(page.locator("#side")).to_contain_text("onerror")
    expect(page.locator(".tl-bar")).to_have_count(1)
    page.locator(".tl-bar").hover()
    expect(page.locator("#tooltip")).to_contain_text("<i>tool</i>")
    # nothing the agent wrote became an element, and no script of it ran
    assert (
        page.locator("#transcript img, #transcript script, #transcript b b, #side img").count() == 0
    )
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # the stats page: the agent's name in the legend and the charts' tooltips, the
    # tool's name in the table, all as text
    page.goto(ui.url + "/stats")
    expect(page.locator('#legend li[data-series="<b>evil</b>"]')).to_contain_text("<b>evil</b>")
    name = page.locator('#tool-rows tr[data-tool="<i>tool</i>"] .name')
    expect(name).to_have_text("<i>tool</i>")
    title = page.locator('#chart-sessions rect[data-series="<b>evil</b>"] title')
    assert title.text_content().endswith("<b>evil</b>: 1")
    assert page.locator("#legend b, #tool-rows i, svg.chart b, #totals b b").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert not [e for e in page_errors if "pageerror" in e]


def test_a_long_transcript_comes_in_pages_as_you_scroll(
    ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(ui.url + "/s/big-1")
    items = page.locator("#transcript > li")
    expect(page.locator("#tr-note")).to_contain_text(f"of {BIG_MESSAGES} items")
    expect(items.first).to_contain_text("bulk message 0")
    first = items.count()
    assert first < BIG_MESSAGES  # a page (or a few to fill the screen), not everything
    for _ in range(20):
        if items.count() == BIG_MESSAGES:
            break
        page.locator("#sentinel").scroll_into_view_if_needed()
        page.wait_for_timeout(200)
    expect(items).to_have_count(BIG_MESSAGES)
    expect(items.last).to_contain_text(f"bulk message {BIG_MESSAGES - 1}")
    expect(page.locator("#tr-end")).to_have_text("end of the session")
    assert not page_errors


def test_the_page_keeps_a_bounded_number_of_items(
    ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    keep = 400  # the page's smallest window (two pages); the default is 3000
    page.goto(ui.url + f"/s/big-1?keep={keep}")
    items = page.locator("#transcript > li")
    expect(items.first).to_contain_text("bulk message 0")
    expect(page.locator("#tr-end")).to_have_text("scroll for more")
    for _ in range(20):
        if page.locator("#tr-end").text_content() == "end of the session":
            break
        page.locator("#sentinel").scroll_into_view_if_needed()
        page.wait_for_timeout(200)
    expect(page.locator("#tr-end")).to_have_text("end of the session")
    expect(items).to_have_count(keep)
    expect(items.last).to_contain_text(f"bulk message {BIG_MESSAGES - 1}")
    dropped = BIG_MESSAGES - keep
    expect(items.first).to_contain_text(f"bulk message {dropped}")
    expect(page.locator("#tr-dropped")).to_contain_text(f"{dropped} earlier items")
    expect(page.locator("#tr-note")).to_have_text(
        f"{BIG_MESSAGES} of {BIG_MESSAGES} items ({BIG_MESSAGES} messages, 0 tool calls)"
    )
    page.click("#tr-dropped button")
    expect(items.first).to_contain_text("bulk message 0")
    expect(page.locator("#tr-dropped")).to_be_hidden()
    assert not page_errors
