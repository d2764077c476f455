"""Serves the console's static files at ``/ui/``.

The console is a few static files (no build step), read once here. It calls the same
/v1 and /admin APIs as any client, with the key the user types in, so it needs no
server-side session and grants nothing an API key does not. The files are served with a
content security policy that allows only this origin's scripts and styles and no inline
code: a value from the API that slipped into the page as markup still could not run.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

from llmport.errors import NotFoundError

FILES = {"index.html": "text/html; charset=utf-8", "app.mjs": "text/javascript; charset=utf-8",
         "sse.mjs": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # revalidate, so an upgraded gateway serves its own console
}


def add_web_ui(app: FastAPI) -> None:
    here = resources.files(__package__)
    files = {name: (here.joinpath(name).read_bytes(), media) for name, media in FILES.items()}

    def serve(name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise NotFoundError(f"No console file {name!r}.", code="unknown_url")
        body, media = found
        return Response(body, media_type=media, headers=HEADERS)

    @app.get("/ui", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    @app.get("/ui/", include_in_schema=False)
    async def console_page() -> Response:
        return serve("index.html")

    @app.get("/ui/{name}", include_in_schema=False)
    async def console_file(name: str) -> Response:
        return serve(name)
