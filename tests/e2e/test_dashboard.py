"""The operators' dashboard in a real browser: Debian's Chromium, driven by Playwright, against
the real processes (tests/e2e/conftest.py's stack: queue service, gateway, local S3; workers
started here by their real command).

The browser is offline: Chromium resolves no host but this machine, and every page's requests
to anywhere but 127.0.0.1 are aborted and recorded, so a page that needed a CDN would fail here
(and the recording must stay empty). An operator signs in, watches a job move through its
stages in the running list without a reload, opens a job's page (the stage timeline and the
advert the real pipeline made), retries a dead-letter job and cancels a queued one after a
confirmation, with the keyboard, and at a phone's width.

Screenshots go to a temporary folder, or to $DASHBOARD_SCREENSHOTS (the ones in
docs/screenshots/ were made with DASHBOARD_SCREENSHOTS=docs/screenshots).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

from jobqueue.v1 import admin_service_pb2, admin_service_pb2_grpc
from tests.e2e.conftest import ADMIN_KEY, Stack
from tests.support.fake_openai import API_KEY, FakeOpenAI
from tests.support.processes import Process
from worker_service.pipeline.factory import STAGE_NAMES

pytestmark = [pytest.mark.e2e]

CHROMIUM = shutil.which("chromium")
# Chromium itself resolves no name but the loopback ones: nothing can leave the machine.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# The small pipeline of tests/worker: its `wait_for_gate` stage holds a job RUNNING until a file
# exists, so the page can be watched while the job is at a known stage.
GATED_PIPELINE = "tests.worker.pipelines:build_pipeline"
WATCHED_QUEUE = "dashboard"
PARKED_QUEUE = "parked"
WORKER_ID = "dashboard-worker-1"
# The stages a gated job reports, in order (the worker's own, then the pipeline's).
GATED_STAGES = [
    "claimed",
    "validating_input",
    "pipeline_running",
    "read_source",
    "wait_for_gate",
    "fingerprint",
    "persist",
    "succeeded",
]

# Polls run every 2 s and two cores are shared: give each expectation room.
expect.set_options(timeout=20_000)


# -- The browser ------------------------------------------------------------------------------


class Tab:
    """A browser tab on its own session (context), offline, recording what it tried to reach
    outside this machine and what the console said (CSP violations are console errors)."""

    def __init__(self, browser: Browser, base_url: str, viewport: ViewportSize) -> None:
        self.base_url = base_url
        self.context: BrowserContext = browser.new_context(viewport=viewport)
        self.blocked: list[str] = []
        self.console: list[str] = []
        self.requests: list[str] = []
        self.context.route(lambda url: urlsplit(url).hostname not in LOCAL_HOSTS, self._abort)
        self.page: Page = self.context.new_page()
        self.page.on(
            "console", lambda message: self.console.append(f"{message.type}: {message.text}")
        )
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _abort(self, route: Route) -> None:
        self.blocked.append(route.request.url)
        route.abort()

    def goto(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def sign_in(self, path: str = "/ui/") -> Page:
        page = self.goto(path)
        page.get_by_label("Admin key").fill(ADMIN_KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#content")).to_be_visible()
        return page

    def assert_clean(self, *expected: str) -> None:
        """Nothing left the machine, nothing broke (but the `expected` console errors), and the
        key never went into a URL."""
        assert self.blocked == [], self.blocked
        problems = [
            line
            for line in self.console
            if line.startswith(("error", "pageerror")) and not any(e in line for e in expected)
        ]
        assert problems == [], problems
        assert not [url for url in self.requests if ADMIN_KEY in url]

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM, (
        "no chromium on PATH: scripts/setup.sh installs Debian's (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[OFFLINE])
        yield launched
        launched.close()


@pytest.fixture
def tab(browser: Browser, stack: Stack) -> Iterator[Tab]:
    opened = Tab(browser, f"http://127.0.0.1:{stack.gateway_port}", DESKTOP)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., None]:
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)

    def take(what: Page | Locator, name: str, *, full_page: bool = False) -> None:
        path = str(folder / f"{name}.png")
        if isinstance(what, Page):
            what.screenshot(path=path, full_page=full_page)
        else:
            what.screenshot(path=path)

    return take


# -- The system -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gated pipeline's stand-in for the bucket."""
    root = tmp_path_factory.mktemp("objects")
    (root / "ads").mkdir()
    for name in ("spring-sale.mp4", "summer-sale.mp4", "autumn-sale.mp4", "broken.mp4"):
        (root / "ads" / name).write_bytes(os.urandom(256 * 1024))
    return root


def gated_worker(stack: Stack, objects: Path, *args: str, queue: str, name: str) -> Process:
    return stack.worker(
        *args,
        name=name,
        WORKER_PIPELINE=GATED_PIPELINE,
        TEST_OBJECT_ROOT=str(objects),
        WORKER_QUEUE=queue,
        WORKER_ID=WORKER_ID if queue == WATCHED_QUEUE else f"{name}-1",
        HEARTBEAT_INTERVAL_SECONDS="0.5",
    )


@pytest.fixture(scope="module")
def watched_worker(stack: Stack, objects: Path) -> Process:
    """A worker running two jobs at once from the watched queue, for the whole module."""
    worker = gated_worker(stack, objects, "--concurrency", "2", queue=WATCHED_QUEUE, name="watched")
    worker.wait_for_line(r"Worker ready")
    return worker


def enqueue(stack: Stack, job_input: dict[str, Any], queue: str) -> str:
    """EnqueueJob as a producer calls it (the REST route always uses the default queue)."""
    message = struct_pb2.Struct()
    message.update({**job_input, "nonce": uuid.uuid4().hex})
    with grpc.insecure_channel(stack.queue_addr) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        answer = stub.EnqueueJob(
            admin_service_pb2.EnqueueJobRequest(queue=queue, input=message), timeout=10
        )
    return str(answer.job.id)


@pytest.fixture
def rest(stack: Stack) -> Iterator[httpx.Client]:
    base_url = f"http://127.0.0.1:{stack.gateway_port}"
    headers = {"X-Admin-Key": ADMIN_KEY}
    with httpx.Client(base_url=base_url, headers=headers, timeout=15) as client:
        yield client


def job_of(rest: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = rest.get(f"/api/ingest/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()["job"]
    return job


# -- The tests --------------------------------------------------------------------------------


def test_the_key_is_kept_for_the_tab_only(browser: Browser, stack: Stack, tab: Tab) -> None:
    page = tab.goto("/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Admin key")).to_be_focused()
    page.get_by_label("Admin key").fill("not-the-key")
    page.keyboard.press("Enter")
    expect(page.locator("#sign-in-error")).to_have_text("That key was refused.")

    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator('[data-status="total"] .count-value')).to_have_text(re.compile(r"^\d+$"))
    assert page.evaluate("sessionStorage.getItem('jobqueue.adminKey')") == ADMIN_KEY
    assert page.evaluate("localStorage.length") == 0
    assert tab.context.cookies() == []

    # The same tab keeps it across a reload; another session has to sign in.
    page.reload()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    other = Tab(browser, tab.base_url, DESKTOP)
    try:
        expect(other.goto("/ui/").get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        other.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    tab.assert_clean("status of 401")  # the wrong key's answer
    assert ADMIN_KEY not in stack.gateway.output


def test_the_running_list_follows_a_job_through_its_stages(
    stack: Stack,
    objects: Path,
    watched_worker: Process,
    tab: Tab,
    rest: httpx.Client,
    screenshot: Callable[..., None],
) -> None:
    gate = objects / "gate-open"
    page = tab.sign_in()
    succeeded = page.locator('[data-status="SUCCEEDED"] .count-value')
    expect(succeeded).to_have_text(re.compile(r"^\d+$"))
    before = int(succeeded.inner_text())
    # A marker that a reload would wipe out.
    page.evaluate("window.sameDocument = true")

    jobs = [
        enqueue(stack, {"source_type": "s3", "s3_key": f"ads/{name}", "gate": str(gate)}, queue)
        for name, queue in (
            ("spring-sale.mp4", WATCHED_QUEUE),
            ("summer-sale.mp4", WATCHED_QUEUE),
            ("autumn-sale.mp4", WATCHED_QUEUE),
        )
    ]
    watched = jobs[0]
    # Record every stage the page shows for the first job, as the page changes.
    page.evaluate(
        """(id) => {
          window.stagesShown = [];
          const look = () => {
            const cell = document.querySelector(`#running tr[data-key="${id}"] td[data-stage]`);
            const stage = cell && cell.dataset.stage;
            if (stage && window.stagesShown.at(-1) !== stage) window.stagesShown.push(stage);
          };
          new MutationObserver(look).observe(document.getElementById("running"),
            {subtree: true, childList: true, attributes: true, characterData: true});
          look();
        }""",
        watched,
    )
    row = page.locator(f'#running tr[data-key="{watched}"]')
    expect(row.locator("td[data-stage]")).to_have_text("wait_for_gate")
    expect(row.locator(".percent")).to_have_text(re.compile(r"^[1-9]\d*%$"))
    expect(row).to_contain_text(WORKER_ID)
    expect(row).to_contain_text("s3:ads/spring-sale.mp4")
    expect(page.locator("#running tbody tr")).to_have_count(2)  # the worker runs two at once
    expect(page.locator("#workers")).to_contain_text(WORKER_ID)
    expect(page.locator("#running-count")).to_have_text("(2)")
    # The heartbeat age is refreshed as the worker beats.
    heartbeat = row.locator("td").nth(5)
    first = heartbeat.inner_text()
    expect(heartbeat).not_to_have_text(first)
    screenshot(page, "overview-desktop", full_page=True)
    page.set_viewport_size(PHONE)
    screenshot(page, "overview-phone", full_page=True)
    page.set_viewport_size(DESKTOP)

    gate.touch()
    expect(row).to_have_count(0)
    expect(page.locator("#running tbody tr")).to_have_count(0)
    expect(succeeded).to_have_text(str(before + 3))
    expect(page.locator("#throughput-summary")).to_contain_text(re.compile(r"\b[1-9]\d* completed"))
    expect(page.locator("#running-empty")).to_be_visible()
    screenshot(page.locator("#throughput-title").locator(".."), "throughput-desktop")

    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    # Polled every 2 s, the page sees some of the stages, always in the order they ran.
    stages = page.evaluate("window.stagesShown")
    assert "wait_for_gate" in stages, stages
    assert stages == sorted(stages, key=GATED_STAGES.index), stages
    assert all(job_of(rest, job)["status"] == "SUCCEEDED" for job in jobs)
    tab.assert_clean()


def test_a_job_page_shows_its_timeline_and_the_advert_it_made(
    stack: Stack,
    tab: Tab,
    rest: httpx.Client,
    fake_openai: FakeOpenAI,
    screenshot: Callable[..., None],
) -> None:
    """The real nine-stage pipeline on the sample advert, OpenAI's paths answered locally (by a
    server reset for this test: an earlier test's canned answers must not leak in)."""
    answer = rest.post(
        "/api/ingest/enqueue", json={"source_type": "s3", "s3_key": "videos/test-ad.mp4"}
    )
    job_id = answer.json()["job_id"]
    worker = stack.worker(
        "--once",
        "--limit",
        "1",
        name="pipeline-worker",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_openai.base_url,
    )
    assert worker.wait(timeout=240) == 0, worker.output
    job = job_of(rest, job_id)
    assert job["status"] == "SUCCEEDED", job

    page = tab.sign_in(f"/ui/jobs/{job_id}")
    expect(page.locator("#status")).to_have_text("SUCCEEDED")
    expect(page.locator("#job-head h1")).to_contain_text(job_id)
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(len(STAGE_NAMES))
    assert timeline.locator(".stage-name").all_inner_texts() == list(STAGE_NAMES)
    for text in timeline.locator(".stage-time").all_inner_texts():
        assert re.fullmatch(r"\d+\.\d+ s|\d+ min \d+ s", text), text
    expect(page.locator("#timeline-note")).to_contain_text("in the order they ran")
    expect(page.locator("#errors-empty")).to_be_visible()

    advert = page.locator("#advert")
    expect(advert).to_contain_text(job["output"]["ad_id"])
    expect(page.locator("#advert-media")).to_contain_text("8.0 s")  # the 8-second sample
    expect(page.locator("#advert-transcript .transcript")).not_to_be_empty()
    expect(page.locator("#advert-analysis")).to_contain_text("Sparkle Cola")
    expect(page.locator("#keyframes tbody tr").first).to_be_visible()
    expect(page.locator("#advert-provenance")).to_contain_text("openai:")
    expect(page.locator("#input")).to_contain_text("videos/test-ad.mp4")
    screenshot(page, "job-desktop", full_page=True)

    page.set_viewport_size(PHONE)
    page.locator("#timeline").scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "job-phone")
    tab.assert_clean()


def test_a_dead_letter_job_is_retried_and_a_queued_one_cancelled_after_confirmation(
    stack: Stack,
    objects: Path,
    tab: Tab,
    rest: httpx.Client,
    screenshot: Callable[..., None],
) -> None:
    """With the keyboard: Space selects, Enter presses, Escape keeps things as they are."""
    job_id = enqueue(
        stack, {"source_type": "s3", "s3_key": "ads/broken.mp4", "fail": "permanent"}, PARKED_QUEUE
    )
    # One run of a worker on a queue nobody else serves: the job fails for good (a permanent
    # error), and after the retry it stays QUEUED for the cancel.
    worker = gated_worker(stack, objects, "--once", "--limit", "1", queue=PARKED_QUEUE, name="once")
    assert worker.wait(timeout=60) == 0, worker.output
    assert job_of(rest, job_id)["status"] == "FAILED"

    page = tab.sign_in("/ui/dead-letter")
    row = page.locator(f'#jobs tr[data-key="{job_id}"]')
    expect(row).to_contain_text("UNSUPPORTED_MEDIA")
    expect(row).to_contain_text("FAILED")
    row.get_by_role("checkbox").focus()
    page.keyboard.press("Space")
    retry = page.get_by_role("button", name="Retry 1 selected")
    expect(retry).to_be_enabled()

    # Asked, and answered "keep as is" (Escape): nothing changes.
    retry.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Retry 1 job?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(job_id[:8])
    expect(page.locator("#confirm-no")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#toast")).to_have_text("Nothing changed.")
    assert job_of(rest, job_id)["status"] == "FAILED"

    # Asked again, and confirmed.
    retry.focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    screenshot(page, "dead-letter-confirm-desktop")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Retry 1 job")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_have_text("1 job queued for retry.")
    expect(row).to_have_count(0)
    job = job_of(rest, job_id)
    assert job["status"] == "QUEUED" and len(job["errors"]) == 1, job

    # The same job, now QUEUED, found by its queue and cancelled from the job list.
    page.goto(f"{tab.base_url}/ui/jobs?queue={PARKED_QUEUE}")
    row = page.locator(f'#jobs tr[data-key="{job_id}"]')
    expect(row).to_contain_text("QUEUED")
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Cancel 1 selected").click()
    page.get_by_role("dialog", name="Cancel 1 job?").get_by_role(
        "button", name="Cancel 1 job"
    ).click()
    expect(page.locator("#toast")).to_have_text("1 job cancelled or being cancelled.")
    expect(row).to_contain_text("CANCELLED")
    assert job_of(rest, job_id)["status"] == "CANCELLED"

    # Its page keeps the error history of the attempt that failed.
    page.goto(f"{tab.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#status")).to_have_text("CANCELLED")
    expect(page.locator("#errors tbody tr")).to_have_count(1)
    expect(page.locator("#errors")).to_contain_text("UNSUPPORTED_MEDIA")
    expect(page.locator("#errors-older")).to_be_hidden()
    # ... and the admin actions done to it, oldest first, by whom (this stack runs without
    # credentials: every caller is anonymous).
    audit = page.locator("#audit tbody tr")
    expect(audit).to_have_count(3)
    for row, action in enumerate(["enqueue", "retry", "cancel"]):
        expect(audit.nth(row).locator("td").nth(1)).to_have_text(action)
        expect(audit.nth(row).locator("td").nth(2)).to_have_text("anonymous (admin+worker)")
        expect(audit.nth(row).locator("code")).to_have_text("ok")
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    tab.assert_clean()


def test_a_job_page_says_when_its_error_history_is_the_last_twenty(stack: Stack, tab: Tab) -> None:
    # Failed 27 times over operator retries: the history keeps the last 20, numbered 8..27.
    stack.psql(
        "INSERT INTO ingestion_jobs (input, idempotency_key, status, completed_at, errors)"
        ' SELECT \'{"source_type": "s3", "s3_key": "videos/often.mp4"}\', \'often\','
        "        'FAILED', now(), jsonb_agg(jsonb_build_object('attempt', 1, 'code', 'E',"
        "        'message', 'failure ' || n, 'number', n) ORDER BY n)"
        " FROM generate_series(8, 27) n"
    )
    [row] = stack.query("SELECT id FROM ingestion_jobs WHERE idempotency_key = 'often'")
    page = tab.sign_in(f"/ui/jobs/{row['id']}")
    expect(page.locator("#errors tbody tr")).to_have_count(20)
    expect(page.locator("#errors-older")).to_have_text("The last 20 of 27 failed attempts.")
    tab.assert_clean()


def test_the_queue_filter_asks_the_api_and_the_source_filter_says_it_is_this_page(
    stack: Stack, tab: Tab
) -> None:
    queue = f"filters-{uuid.uuid4().hex[:6]}"  # no worker serves it: the jobs stay QUEUED
    for key in ("ads/winter-sale.mp4", "ads/winter-promo.mp4", "ads/spring-promo.mp4"):
        enqueue(stack, {"source_type": "s3", "s3_key": key}, queue)
    page = tab.sign_in("/ui/jobs")
    page.get_by_label("Queue").fill(queue)
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(3)
    page.get_by_label("Source contains").fill("winter")
    expect(rows).to_have_count(2)
    expect(page.locator("#filtered-note")).to_have_text(
        "Showing 2 of the 3 jobs on this page whose source contains “winter” "
        "(the text filter applies to this page only)."
    )
    assert f"queue={queue}" in page.url and "q=winter" in page.url
    tab.assert_clean()


def test_the_pages_fit_a_phone(
    browser: Browser, stack: Stack, screenshot: Callable[..., None]
) -> None:
    enqueue(stack, {"source_type": "s3", "s3_key": "ads/phone-sized.mp4"}, "phone")
    phone = Tab(browser, f"http://127.0.0.1:{stack.gateway_port}", PHONE)
    try:
        page = phone.sign_in()
        for path in ("/ui/", "/ui/dead-letter", "/ui/jobs"):
            page.goto(phone.base_url + path)
            expect(page.locator("#content")).to_be_visible()
            expect(page.locator("#live")).to_contain_text(re.compile("updated", re.IGNORECASE))
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
        expect(page.locator("#jobs tbody tr").first).to_be_visible()
        screenshot(page, "jobs-phone")
        # At this width each table row is a card whose cells are labelled.
        cell = page.locator("#jobs tbody tr").first.locator('td[data-label="Status"]')
        label = cell.evaluate("td => getComputedStyle(td, '::before').content")
        assert label == '"Status"', label
        # The header row is hidden, but not its select-all box.
        page.get_by_text("Select all on this page").click()
        expect(page.locator("#select-all")).to_be_checked()
        expect(page.locator("#jobs tbody input.select").first).to_be_checked()
        phone.assert_clean()
    finally:
        phone.close()


def test_focus_is_visible_and_the_skip_link_comes_first(tab: Tab) -> None:
    page = tab.sign_in()
    # Signing in moves the focus to the page's content.
    expect(page.locator("#content")).to_be_focused()
    page.reload()  # the key is kept; the focus starts at the top of the document
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    outline = skip.evaluate("link => getComputedStyle(link).outlineStyle")
    assert outline == "solid", outline
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    # From the main content, Tab moves to the first link or button in it, never to nowhere.
    assert page.evaluate("document.activeElement.closest('main') !== null")


def test_the_docs_and_the_dashboard_render_with_no_way_out(
    tab: Tab, screenshot: Callable[..., None]
) -> None:
    page = tab.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Ingestion job queue")
    for path in ("/api/ingest/enqueue", "/api/ingest/running", "/api/ingest/adverts/{ad_id}"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Authorize"))).to_be_visible()
    screenshot(page, "docs-offline-desktop")

    page = tab.sign_in()
    expect(page.locator("#health")).to_have_text(re.compile(r"^(healthy|degraded|unhealthy)$"))
    expect(page.locator('[data-status="total"] .count-value')).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#live")).to_contain_text("Live")
    # Every request stayed on this machine (the recording of blocked ones is empty), no
    # script was refused by the Content-Security-Policy, nothing failed.
    assert any("/docs/assets/swagger-ui-bundle.js" in url for url in tab.requests)
    tab.assert_clean()
