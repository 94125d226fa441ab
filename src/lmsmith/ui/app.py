"""Mount the UI on an app (`lmsmith serve` does, at /ui) or serve it alone (`lmsmith ui`: registry, runs and
reports without a model)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from lmsmith.ui.api import make_router

STATIC = Path(__file__).parent / "static"
PAGES = {"": "playground.html", "models": "models.html", "runs": "runs.html", "run": "run.html",
         "monitor": "monitor.html"}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def mount_ui(app: FastAPI, api_key: str | None = None, preferences: Path | None = None) -> FastAPI:
    """Add the pages (no data in them, so no auth) and the JSON API (the server's auth) to `app`."""
    app.include_router(make_router(api_key, preferences))

    @app.get("/ui", include_in_schema=False)
    def ui_root():
        return FileResponse(STATIC / PAGES[""], media_type="text/html")

    @app.get("/ui/static/{name}", include_in_schema=False)
    def static(name: str):
        p = STATIC / name
        if "/" in name or p.suffix not in TYPES or not p.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(p, media_type=TYPES[p.suffix], headers={"Cache-Control": "no-cache"})

    @app.get("/ui/{page}", include_in_schema=False)
    def page(page: str):
        if page not in PAGES:
            raise HTTPException(404, f"no page /ui/{page}")
        return FileResponse(STATIC / PAGES[page], media_type="text/html")

    return app


def create_app(api_key: str | None = None, preferences: Path | None = None) -> FastAPI:
    """The UI without a served model (`lmsmith ui`)."""
    app = FastAPI(title="lmsmith ui")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/ui/models")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return mount_ui(app, api_key, preferences)
