"""The dashboard's page and the files beside it, served to anyone who can reach the admin
surface: they hold no data (the data comes from the API, with the token)."""

from __future__ import annotations

from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import PAGE_PATH

ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def load_assets() -> dict[str, bytes]:
    package = resources.files("admin.dashboard")
    return {name: (package / name).read_bytes() for name in ASSETS}


def page_routes() -> list[Route]:
    """GET /dashboard, GET /dashboard/NAME; /dashboard/ redirects (308) to ../dashboard,
    against which the page's relative URLs resolve."""
    assets = load_assets()

    def serve(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404)
        return Response(assets[name], headers={**PAGE_HEADERS, "content-type": ASSETS[name]})

    async def page(request: Request) -> Response:
        return serve("dashboard.html")

    async def asset(request: Request) -> Response:
        return serve(request.path_params["name"])

    async def to_page(request: Request) -> Response:
        return RedirectResponse("../dashboard", status_code=308)

    return [
        Route(PAGE_PATH, page, methods=["GET"]),
        Route(PAGE_PATH + "/", to_page, methods=["GET"]),
        Route(PAGE_PATH + "/{name}", asset, methods=["GET"]),
    ]
