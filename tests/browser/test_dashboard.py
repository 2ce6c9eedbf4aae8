"""The dashboard in a real browser: Debian's chromium, driven by Playwright, on the real binary.

Covers the task list and its filter; Run with arguments, the run under Running, its output
following live, Kill, and History showing it killed; a run's output stream resuming at its
Last-Event-ID; a refused body shown in the form; a rejected
reload shown as an alert; tokens (sign-in, a read-only token sees no Run button and its forged Run
is refused, an action from another origin is refused); and that no page asks anything of a host
other than 127.0.0.1 (checked after every test by the ``page`` fixture).
"""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from conftest import Service, poll


def test_task_list_and_filter(service: Service, page: Page) -> None:
    page.goto(service.base + "/")
    expect(page).to_have_url(re.compile(r"/ui/$"))
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    rows = page.locator("#tasks tbody tr")
    # Three from the file and the built-in counter.
    expect(rows).to_have_count(4)
    ticker = page.locator('tr[data-task="tendb-cluster/ticker"]')
    expect(ticker).to_contain_text("every 5 minutes")
    expect(ticker).to_contain_text("next ")
    page.get_by_label("Filter").press_sequentially("redis")
    expect(page.locator("#tasks tbody tr:visible")).to_have_count(1)
    expect(page.locator("#tasks tbody tr:visible")).to_contain_text("redis/backup")
    # The server's answer replaces the rows as well, and the address keeps the filter.
    expect(page).to_have_url(re.compile(r"q=redis"))
    expect(page.locator("#task-count")).to_have_text("1 tasks match")


def test_run_follow_kill_history(service: Service, page: Page) -> None:
    page.goto(service.base + "/ui/")
    page.locator('tr[data-task="tendb-cluster/ticker"]').get_by_role("button", name="Run").click()
    args = page.get_by_label("Arguments")
    expect(args).to_have_value('["first"]')
    args.fill('["alpha", "beta"]')

    running = page.context.new_page()
    running.goto(service.base + "/ui/running")
    expect(running.get_by_role("heading", name="Running")).to_be_visible()

    page.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    session = page.url.rsplit("/", 1)[1]

    # It appears under Running without a reload, with its latest line updating live.
    row = running.locator(f"#run-{session}")
    expect(row).to_contain_text("tendb-cluster/ticker")
    expect(row.locator(".latest")).to_contain_text(re.compile(r"tick \d+ alpha beta"))
    # Its own page follows its output line by line.
    expect(page.locator("#output li").first).to_have_text("tick 1 alpha beta")
    expect(page.locator("#output li").nth(3)).to_have_text("tick 4 alpha beta")

    # The Tasks page, open before the kill, shows the last run change without a reload.
    tasks = page.context.new_page()
    tasks.goto(service.base + "/ui/")
    last = tasks.locator('tr[data-task="tendb-cluster/ticker"] td.last')
    expect(last).to_contain_text("running")

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Kill").click()
    expect(last).to_contain_text("killed")
    tasks.close()
    expect(page.locator("#run-status")).to_have_text("killed", timeout=20_000)
    expect(row).to_have_count(0)

    def killed_in_history() -> bool:
        page.goto(service.base + "/ui/history?task=tendb-cluster/ticker")
        cell = page.locator("#history tbody tr").filter(has=page.locator(f'a[href="/ui/runs/{session}"]'))
        return cell.count() == 1 and "killed" in cell.inner_text()

    poll("History to show the run killed", killed_in_history)
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    mark = page.locator(f'svg a[href="/ui/runs/{session}"] title')
    expect(mark).to_contain_text("killed")
    running.close()


def test_a_refused_body_shows_the_services_error(service: Service, page: Page) -> None:
    page.goto(service.base + "/ui/tasks/tendb-cluster/ticker")
    page.get_by_label("Arguments").fill('{"not": "a list"}')
    page.get_by_role("button", name="Run").click()
    error = page.locator("form.run [role=alert]")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(page.get_by_label("Arguments")).to_have_value('{"not": "a list"}')


def test_a_rejected_reload_shows_an_alert_on_every_page(service: Service, page: Page) -> None:
    page.goto(service.base + "/ui/config")
    expect(page.locator("#generation")).to_have_text("1")
    expect(page.get_by_role("alert")).to_have_count(0)
    service.config.write_text("- name: broken\n  cluster_type: X\n  language: cobol\n")
    page.get_by_role("button", name="Reload").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("rejected")
    expect(alert).to_contain_text("cobol")
    expect(page.locator("#generation")).to_have_text("1")
    page.goto(service.base + "/ui/history")
    expect(page.get_by_role("alert")).to_contain_text("rejected")


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(base + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


def test_a_read_only_token_sees_every_page_but_changes_nothing(secured: Service, page: Page) -> None:
    sign_in(page, secured.base, "look-only")
    expect(page.locator("#tasks tbody tr")).to_have_count(4)
    expect(page.get_by_role("button", name="Run")).to_have_count(0)
    page.goto(secured.base + "/ui/config")
    expect(page.get_by_role("button", name="Reload")).to_have_count(0)
    # A forged Run with the read-only cookie and the right Origin is refused by the server.
    forged = page.request.post(
        secured.base + "/ui/tasks/tendb-cluster/ticker/run",
        form={"args": "[]"},
        headers={"Origin": secured.base},
    )
    assert forged.status == 403, forged.status
    page.goto(secured.base + "/ui/running")
    expect(page.locator("#running tbody tr")).to_have_count(0)


def test_tokens_sign_in_and_actions_check_the_origin(secured: Service, page: Page) -> None:
    page.goto(secured.base + "/ui/signin")
    page.get_by_label("Token").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    sign_in(page, secured.base, "full-secret")
    expect(page.get_by_role("button", name="Run")).to_have_count(4)
    cookie = next(c for c in page.context.cookies() if c["name"] == "cs_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    other = page.request.post(
        secured.base + "/ui/tasks/tendb-cluster/demo1/run",
        form={"args": "[]"},
        headers={"Origin": "http://evil.example"},
        max_redirects=0,
    )
    assert other.status == 403, other.status
    same = page.request.post(
        secured.base + "/ui/tasks/tendb-cluster/demo1/run",
        form={"args": "[]"},
        headers={"Origin": secured.base},
        max_redirects=0,
    )
    assert same.status == 303, same.status


def events(text: str) -> list[tuple[str, dict]]:
    """The (id, data) of each server-sent event of ``text``."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            out.append((fields.get("id", ""), json.loads(fields["data"])))
    return out


def test_a_runs_output_resumes_at_the_last_event_id(service: Service, page: Page) -> None:
    page.goto(service.base + "/ui/tasks/tendb-cluster/demo1")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#run-status")).to_have_text("ok")
    session = page.url.rsplit("/", 1)[1]
    url = f"{service.base}/ui/runs/{session}/output?task=tendb-cluster/demo1"
    first = events(page.request.get(url).text())
    assert [line["text"] for _, p in first for line in p["lines"]] == ["hello"], first
    last_id = first[-1][0]
    # A reconnecting EventSource sends the last id it saw: nothing is sent twice.
    again = events(page.request.get(url, headers={"Last-Event-ID": last_id}).text())
    assert again and all(not p["lines"] for _, p in again), again
    assert again[-1][1]["done"] is True
