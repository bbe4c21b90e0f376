"""Browser security headers on every response the gateway sends.

The dashboard shows job inputs, outputs and error messages that anyone who can enqueue a job
controls, so the pages are built to never run what they show (text only, no innerHTML), and the
Content-Security-Policy is the second line: scripts, styles, images and connections from this
origin only, no inline script, no framing (clickjacking of the Retry and Cancel buttons). The
docs page also allows `data:` images, which Swagger UI's stylesheet uses for its icons. API
responses are JSON that no browser should render or embed: they get the strictest policy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = PAGE_CSP.replace("img-src 'self'", "img-src 'self' data:")
API_CSP = "default-src 'none'; frame-ancestors 'none'"

COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# Asset URLs carry no version, so a browser must ask again (a cheap 304 by ETag) after an
# upgrade rather than mix an old script with a new page.
REVALIDATE = (b"cache-control", b"no-cache")


def policy_for(path: str) -> tuple[bytes, bool]:
    """(Content-Security-Policy, whether it is an asset to revalidate) for a request path."""
    if path == "/docs" or path.startswith("/docs/"):
        return DOCS_CSP.encode(), path.startswith("/docs/assets/")
    if path == "/ui" or path.startswith("/ui/"):
        return PAGE_CSP.encode(), path.startswith("/ui/static/")
    return API_CSP.encode(), False


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp, asset = policy_for(scope["path"])
        extra = [*COMMON, (b"content-security-policy", csp)]
        if asset:
            extra.append(REVALIDATE)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                added = [(name, value) for name, value in extra if name not in names]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)
