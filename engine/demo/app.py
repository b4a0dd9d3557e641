"""The demo's web application: one page and a small JSON/image API (FastAPI).

Routes:
    ``GET /``: the page.
    ``POST /api/segment?name=FILE&threshold=T``: the image or video file as the request body (no
    multipart form, so the size limit is enforced while reading); answers ``{"id", "kind", "stem",
    "width", "height"}``, ``kind`` being ``"image"`` or ``"video"`` (which adds ``"frames"``, ``"fps"``
    and ``"threshold"``: a video's masks are made once, for the threshold sent with it).
    ``GET /api/results/{id}/image.jpg``: the image as decoded.
    ``GET /api/results/{id}/mask.png?threshold=T``: the mask ``predict`` writes (``T`` empty or
    0: the 8-bit probability map; else ``predict --threshold T``).
    ``GET /api/results/{id}/overlay.jpg?threshold=T``: the mask tinted on the image.
    ``GET /api/results/{id}/video/original``, ``.../video/mask.mp4``, ``.../video/overlay.mp4``: a
    video upload as sent, and the mask and overlay videos ``predict --input clip.mp4 --overlay`` writes;
    ``.../video/{original,mask,overlay}.webm``: VP8 copies the browser plays (listed in ``previews``).

Refusals are JSON ``{"error": message}`` with status 400 (neither an image nor a video, bad value),
404 (unknown result) or 413 (too many bytes, pixels or frames); the page shows the message.
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
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from engine.demo.results import (DemoError, DemoResult, ResultStore, encode_jpeg, encode_png, parse_threshold,
                                 segment_upload)
from engine.demo.video import DemoVideo, segment_video_upload

__all__ = ["create_app", "read_page", "segment_file"]

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


def _get(store: ResultStore, key: str, kind: type) -> Any:
    """The result ``key``, refused with 404 where it is of the other kind (an image asked as a video)."""
    result = store.get(key)
    if not isinstance(result, kind):
        raise DemoError(404, f"This result is not {'a video' if kind is DemoVideo else 'an image'}.")
    return result


def segment_file(segmenter: Any, data: bytes, name: str, threshold: Optional[float], max_pixels: Optional[int],
                 max_frames: Optional[int]) -> Any:
    """A :class:`DemoResult` for an image, else a :class:`DemoVideo` for a video OpenCV decodes.

    Images are tried first: a video never decodes as an image, and the image path refuses
    compressed bombs from their header before anything is decoded.

    Raises:
        DemoError: 400 when the bytes are neither; 413 over the pixel or frame limit.
    """
    try:
        return segment_upload(segmenter, data, name, max_pixels)
    except DemoError as exc:
        if exc.status != 400 or not data:
            raise
        video = segment_video_upload(segmenter, data, name, threshold, max_frames)
        if video is None:
            raise
        return video


def _describe(key: str, result: Any) -> dict:
    """The JSON the page gets for a new result."""
    if isinstance(result, DemoVideo):
        height, width = result.size
        return {"id": key, "kind": "video", "stem": result.stem, "width": width, "height": height,
                "frames": result.frames, "fps": result.fps, "threshold": result.threshold,
                "previews": sorted(result.previews)}
    height, width = result.rgb.shape[:2]
    return {"id": key, "kind": "image", "stem": result.stem, "width": width, "height": height}


def _add_video_routes(app: FastAPI, store: ResultStore) -> None:
    @app.get("/api/results/{key}/video/original")
    def original(key: str) -> FileResponse:
        video = _get(store, key, DemoVideo)
        return FileResponse(video.original, media_type="application/octet-stream", headers=_NO_STORE)

    @app.get("/api/results/{key}/video/{part}.webm")
    def preview(key: str, part: str) -> FileResponse:
        video = _get(store, key, DemoVideo)
        if part not in video.previews:
            raise DemoError(404, f"No browser copy named {part!r} (original, mask or overlay, where this "
                                 f"OpenCV build writes VP8).")
        return FileResponse(video.previews[part], media_type="video/webm", headers=_NO_STORE)

    @app.get("/api/results/{key}/video/{part}.mp4")
    def output(key: str, part: str) -> FileResponse:
        if part not in ("mask", "overlay"):
            raise DemoError(404, f"No video named {part!r}: ask for mask.mp4 or overlay.mp4.")
        video = _get(store, key, DemoVideo)
        # RFC 5987 form: a header is Latin-1, a file name may be in any script.
        headers = {**_NO_STORE, "Content-Disposition": f"inline; filename*=UTF-8''{quote(video.stem)}_{part}.mp4"}
        return FileResponse(getattr(video, part), media_type="video/mp4", headers=headers)


def _add_result_routes(app: FastAPI, store: ResultStore) -> None:
    @app.get("/api/results/{key}/image.jpg")
    def image(key: str) -> Response:
        return Response(encode_jpeg(_get(store, key, DemoResult).rgb), media_type="image/jpeg", headers=_NO_STORE)

    @app.get("/api/results/{key}/mask.png")
    def mask(key: str, threshold: Optional[str] = None) -> Response:
        result = _get(store, key, DemoResult)
        png = encode_png(result.mask(parse_threshold(threshold)))
        # RFC 5987 form: a header is Latin-1, a file name may be in any script.
        headers = {**_NO_STORE, "Content-Disposition": f"inline; filename*=UTF-8''{quote(result.stem)}.png"}
        return Response(png, media_type="image/png", headers=headers)

    @app.get("/api/results/{key}/overlay.jpg")
    def overlay(key: str, threshold: Optional[str] = None) -> Response:
        result = _get(store, key, DemoResult)
        return Response(encode_jpeg(result.overlay(parse_threshold(threshold))), media_type="image/jpeg",
                        headers=_NO_STORE)


def create_app(segmenter: Any, max_upload_bytes: int = 20 * 2**20, title: str = "CamoXpert demo",
               keep: int = 8, max_pixels: Optional[int] = 100_000_000,
               max_video_frames: Optional[int] = 300) -> FastAPI:
    """The demo application around a loaded model.

    Args:
        segmenter: a :class:`engine.inference.api.Segmenter` (anything with its ``predict``).
        max_upload_bytes: larger uploads are refused with HTTP 413.
        max_pixels: images with more pixels are refused with HTTP 413 before they are decoded
            (a few MB of PNG can hold gigabytes of pixels); None: no limit.
        max_video_frames: videos with more frames are refused with HTTP 413; None: no limit.
        title: shown at the top of the page (e.g. the checkpoint's name).
        keep: results kept for the slider and the download button (videos included: their
            files are removed when they are dropped).
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    store = ResultStore(keep)
    model_lock = threading.Lock()  # one upload through the model at a time: memory stays that of one image
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
    async def segment(request: Request, name: str = "image", threshold: Optional[str] = None) -> JSONResponse:
        value = parse_threshold(threshold)  # checked before the upload is read
        data = await _read_body(request, max_upload_bytes)

        def run() -> Any:
            with model_lock:
                return segment_file(segmenter, data, name, value, max_pixels, max_video_frames)

        result = await run_in_threadpool(run)
        return JSONResponse(_describe(store.add(result), result), headers=_NO_STORE)

    _add_result_routes(app, store)
    _add_video_routes(app, store)
    return app
