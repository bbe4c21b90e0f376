"""The dashboard's pages and the API docs page: HTML shells and the files they load, all from
this process.

Nothing here needs the admin key: a page is a template with no data in it, and its scripts
fetch the data from /api with the key the operator typed into the page (kept in the tab's
sessionStorage, sent as X-Admin-Key, never in a URL or a cookie). Swagger UI's files come from
the `fastapi-offline` package rather than a CDN, so /docs works where the gateway has no way
out to the internet; its page is our own template because FastAPI's inlines a script, which the
Content-Security-Policy (gateway.headers) refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC_URL = "/ui/static"
# Swagger UI's JavaScript and CSS, as shipped inside the fastapi-offline package.
DOCS_ASSETS_URL = "/docs/assets"
DOCS_ASSETS_PACKAGE = ("fastapi_offline", "static")

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return templates.TemplateResponse(
        request,
        template,
        {"root": root, "static": root + STATIC_URL, "title": request.app.title, **context},
        status_code=status_code,
    )


@router.get("/ui/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    return render(request, "overview.html", page="overview")


@router.get("/ui/jobs", response_class=HTMLResponse)
async def job_list(request: Request) -> HTMLResponse:
    return render(request, "jobs.html", page="jobs", fixed_status=None)


@router.get("/ui/dead-letter", response_class=HTMLResponse)
async def dead_letter(request: Request) -> HTMLResponse:
    return render(request, "jobs.html", page="dead-letter", fixed_status="FAILED")


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str) -> HTMLResponse:
    try:
        canonical = str(UUID(job_id))
    except ValueError:
        return not_found(request)
    return render(request, "job.html", page="job", job_id=canonical)


@router.get("/ui/{rest:path}", response_class=HTMLResponse)
async def unknown_page(request: Request, rest: str) -> HTMLResponse:
    return not_found(request)


def not_found(request: Request) -> HTMLResponse:
    # Public: the page says nothing about the queue, so it needs no sign-in to be read.
    return render(request, "not_found.html", status_code=404, page="not-found", public=True)


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return render(
        request,
        "docs.html",
        assets=root + DOCS_ASSETS_URL,
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
    )


def install(app: FastAPI) -> None:
    """Mount the assets, then the pages (a mount must come before the /ui/ catch-all)."""
    app.mount(STATIC_URL, StaticFiles(directory=HERE / "static"), name="ui-static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(packages=[DOCS_ASSETS_PACKAGE]), name="docs-assets")
    app.include_router(router)
