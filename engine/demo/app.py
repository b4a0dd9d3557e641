"""The demo's web application: one page and a small JSON/image API (FastAPI).

Routes:
    ``GET /``: the page.
    ``POST /api/segment?name=FILE``: the image file as the request body (no multipart form,
    so the size limit is enforced while reading); answers ``{"id", "stem", "width", "height"}``.
    ``GET /api/results/{id}/image.jpg``: the image as decoded.
    ``GET /api/results/{id}/mask.png?threshold=T``: the mask ``predict`` writes (``T`` empty or
    0: the 8-bit probability map; else ``predict --threshold T``).
    ``GET /api/results/{id}/overlay.jpg?threshold=T``: the mask tinted on the image.

Refusals are JSON ``{"error": message}`` with status 400 (not an image, bad value),
404 (unknown result) or 413 (too many bytes or pixels); the page shows the message.
"""
from __future__ import annotations

import html
import json
import threading
from importlib import resources
from typing import Any, Optional
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from engine.demo.results import DemoError, ResultStore, encode_jpeg, encode_png, parse_threshold, segment_upload

__all__ = ["create_app", "read_page"]

_NO_STORE = {"Cache-Control": "no-store"}


def read_page(title: str, max_upload_bytes: int) -> str:
    """The page's HTML with the checkpoint's name and the upload limit filled in."""
    page = resources.files("engine.demo").joinpath("page.html").read_text(encoding="utf-8")
    config = json.dumps({"maxUploadBytes": int(max_upload_bytes)})
    return page.replace("__TITLE__", html.escape(title)).replace("__CONFIG__", html.escape(config))


def _too_large(limit: int) -> DemoError:
    return DemoError(413, f"The file is larger than the {limit / 2**20:g} MB limit: pick a smaller image "
                          f"(or start the demo with a larger --max-upload-mb).")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes (whatever it claims)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _add_result_routes(app: FastAPI, store: ResultStore) -> None:
    @app.get("/api/results/{key}/image.jpg")
    def image(key: str) -> Response:
        return Response(encode_jpeg(store.get(key).rgb), media_type="image/jpeg", headers=_NO_STORE)

    @app.get("/api/results/{key}/mask.png")
    def mask(key: str, threshold: Optional[str] = None) -> Response:
        result = store.get(key)
        png = encode_png(result.mask(parse_threshold(threshold)))
        # RFC 5987 form: a header is Latin-1, a file name may be in any script.
        headers = {**_NO_STORE, "Content-Disposition": f"inline; filename*=UTF-8''{quote(result.stem)}.png"}
        return Response(png, media_type="image/png", headers=headers)

    @app.get("/api/results/{key}/overlay.jpg")
    def overlay(key: str, threshold: Optional[str] = None) -> Response:
        result = store.get(key)
        return Response(encode_jpeg(result.overlay(parse_threshold(threshold))), media_type="image/jpeg",
                        headers=_NO_STORE)


def create_app(segmenter: Any, max_upload_bytes: int = 20 * 2**20, title: str = "CamoXpert demo",
               keep: int = 8, max_pixels: Optional[int] = 100_000_000) -> FastAPI:
    """The demo application around a loaded model.

    Args:
        segmenter: a :class:`engine.inference.api.Segmenter` (anything with its ``predict``).
        max_upload_bytes: larger uploads are refused with HTTP 413.
        max_pixels: images with more pixels are refused with HTTP 413 before they are decoded
            (a few MB of PNG can hold gigabytes of pixels); None: no limit.
        title: shown at the top of the page (e.g. the checkpoint's name).
        keep: results kept for the slider and the download button.
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    store = ResultStore(keep)
    model_lock = threading.Lock()  # one forward pass at a time: memory stays that of one image
    page = read_page(title, max_upload_bytes)

    @app.exception_handler(DemoError)
    async def refused(request: Request, exc: DemoError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=_NO_STORE)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        # The page gets one line; the console keeps the traceback for whoever runs the server.
        return JSONResponse({"error": f"The model could not process this file ({type(exc).__name__}: {exc})."},
                            status_code=500, headers=_NO_STORE)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=_NO_STORE)

    @app.post("/api/segment")
    async def segment(request: Request, name: str = "image") -> JSONResponse:
        data = await _read_body(request, max_upload_bytes)

        def run() -> Any:
            with model_lock:
                return segment_upload(segmenter, data, name, max_pixels)

        result = await run_in_threadpool(run)
        key = store.add(result)
        height, width = result.rgb.shape[:2]
        return JSONResponse({"id": key, "stem": result.stem, "width": width, "height": height}, headers=_NO_STORE)

    _add_result_routes(app, store)
    return app
