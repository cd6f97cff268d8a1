"""The API reference at ``/docs``: Swagger UI served by this server, no CDN.

FastAPI's own page loads Swagger UI's script and stylesheet from a CDN (and its
favicon from another site), so every visit told a third party who reads the API
docs, and a CDN compromise would run script on the dashboard's origin, where the
browser keeps an API token. Here the page, its script and stylesheet come from
this server (the copy of Swagger UI 5 that the ``fastapi-offline`` package ships;
Swagger UI 4 cannot read FastAPI's OpenAPI 3.1), the page
runs no inline script (its start-up is ``/ui/js/docs.js``), and its
Content-Security-Policy allows this origin only (plus ``data:`` images and
inline styles, which Swagger UI uses). ReDoc (``/redoc``) is not served.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

#: Swagger UI's files as fastapi-offline ships them (tests/integration/
#: test_http_exposure.py fetches each, so a package that moved them fails there).
ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dockyard API reference</title>
<link rel="icon" href="/favicon.ico">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<noscript><p>The reference needs JavaScript; the OpenAPI document is
<a href="/openapi.json">/openapi.json</a>.</p></noscript>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/ui/js/docs.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and the two Swagger UI files it loads (the app is made with
    ``docs_url=None, redoc_url=None``)."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        headers = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}
        return HTMLResponse(PAGE, headers=headers)

    # Two fixed files (no path from the request reaches the file system).
    @app.get("/docs/swagger-ui.css", include_in_schema=False)
    def swagger_css() -> FileResponse:
        return FileResponse(ASSETS / "swagger-ui.css", media_type="text/css")

    @app.get("/docs/swagger-ui-bundle.js", include_in_schema=False)
    def swagger_js() -> FileResponse:
        return FileResponse(ASSETS / "swagger-ui-bundle.js", media_type="text/javascript")
