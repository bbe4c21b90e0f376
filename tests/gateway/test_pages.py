"""The dashboard's pages and the docs page as HTTP sees them (no I/O: the app in process): every
page and asset comes from the gateway itself, no page runs inline script, and the browser
security headers are on every response. What the pages do in a browser is
tests/e2e/test_dashboard.py's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import Config
from gateway.headers import API_CSP, DOCS_CSP, PAGE_CSP
from tests.gateway.conftest import ADMIN_KEY

JOB = "6d0e1f7c-1111-4222-8333-444455556666"
PAGES = ["/ui/", "/ui/jobs", "/ui/dead-letter", f"/ui/jobs/{JOB}", "/docs"]
STATIC = Path(__file__).resolve().parents[2] / "gateway" / "ui" / "static"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Nothing listens at the queue address: pages never call the queue service.
    app = create_app(Config(admin_api_key=ADMIN_KEY, queue_addr="127.0.0.1:9"))
    with TestClient(app) as test_client:
        yield test_client


class Page(HTMLParser):
    """What a page loads and whether it carries anything inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.inputs: list[dict[str, str | None]] = []
        self.forms: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href"):
            if attributes.get(name) and tag in ("script", "link", "img"):
                self.urls.append(str(attributes[name]))
        if tag == "script":
            self._in_script = not attributes.get("src")
        if tag == "style":
            self.inline_styles.append(tag)
        if "style" in attributes:
            self.inline_styles.append(f"{tag} style=")
        self.handlers += [f"{tag} {name}" for name in attributes if name.startswith("on")]
        if tag == "input":
            self.inputs.append(attributes)
        if tag == "form":
            self.forms.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data.strip())


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_html_with_the_security_headers(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == (DOCS_CSP if path == "/docs" else PAGE_CSP)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-frame-options"] == "DENY"


def test_the_policy_allows_this_origin_only() -> None:
    directives = dict(part.strip().split(" ", 1) for part in PAGE_CSP.split(";"))
    assert directives["default-src"] == directives["script-src"] == "'self'"
    assert directives["style-src"] == directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in PAGE_CSP and "unsafe" not in DOCS_CSP
    assert API_CSP == "default-src 'none'; frame-ancestors 'none'"


@pytest.mark.parametrize("path", PAGES)
def test_pages_load_only_their_own_files_and_run_no_inline_script(
    client: TestClient, path: str
) -> None:
    page = parse(client.get(path).text)
    assert page.urls, "a page with no script or stylesheet"
    for url in page.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert page.inline_scripts == []
    assert page.inline_styles == []
    assert page.handlers == []


def test_the_docs_page_starts_swagger_ui_from_local_files(client: TestClient) -> None:
    page = parse(client.get("/docs").text)
    assert "/docs/assets/swagger-ui-bundle.js" in page.urls
    assert "/docs/assets/swagger-ui.css" in page.urls
    assert "/ui/static/docs.js" in page.urls
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in bundle.text[:2000]
    assert 'data-openapi-url="/openapi.json"' in client.get("/docs").text
    # FastAPI's CDN pages are gone, not merely unlinked.
    assert client.get("/redoc").status_code == 404


def test_script_modules_import_files_that_are_served(client: TestClient) -> None:
    for script in sorted(STATIC.glob("*.js")):
        for name in re.findall(r'from "\./([\w.-]+)"', script.read_text(encoding="utf-8")):
            assert client.get(f"/ui/static/{name}").status_code == 200, (script.name, name)


def test_assets_are_revalidated_after_an_upgrade(client: TestClient) -> None:
    for url in ("/ui/static/app.css", "/ui/static/common.js", "/docs/assets/swagger-ui.css"):
        assert client.get(url).headers["cache-control"] == "no-cache", url


def test_the_sign_in_form_can_never_send_the_key_itself(client: TestClient) -> None:
    """The key input has no name, so a form submission (if the script failed) carries no key,
    and the form posts: nothing typed can end up in a URL."""
    page = parse(client.get("/ui/").text)
    [key_input] = [field for field in page.inputs if field.get("id") == "admin-key"]
    assert key_input.get("type") == "password" and "name" not in key_input
    [form] = [form for form in page.forms if form.get("id") == "sign-in-form"]
    assert form.get("method") == "post"


def test_scripts_keep_the_key_in_session_storage_and_never_build_html() -> None:
    sources = {
        # The code, not the comments (which say where the key is not kept).
        script.name: re.sub(r"(?m)^\s*//.*$", "", script.read_text(encoding="utf-8"))
        for script in STATIC.glob("*.js")
    }
    for name, text in sources.items():
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in text, (name, banned)
        for banned in ("localStorage", "document.cookie", 'setAttribute("style"'):
            assert banned not in text, (name, banned)
    assert "sessionStorage.setItem" in sources["common.js"]
    assert '"X-Admin-Key": key' in sources["common.js"]


def test_a_job_page_needs_a_job_id(client: TestClient) -> None:
    canonical = client.get(f"/ui/jobs/{JOB.upper()}")
    assert f'data-job-id="{JOB}"' in canonical.text
    for path in ("/ui/jobs/not-a-uuid", "/ui/jobs/%3Cscript%3E", "/ui/nothing-here"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")
        assert "<script" not in answer.text


def test_api_answers_get_the_strictest_policy(client: TestClient) -> None:
    for path in ("/api/ingest/stats", "/openapi.json"):
        answer = client.get(path)
        assert answer.headers["content-security-policy"] == API_CSP
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    # The guard's own refusal passes the header middleware too.
    assert client.get("/api/ingest/stats").status_code == 401
