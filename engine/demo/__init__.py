"""The demo page: drop an image in a browser, see its mask (``train_ultimate.py demo``).

:mod:`engine.demo.results` holds the work (decoding uploads, running the model, encoding the
panels) and needs only the inference stack; :mod:`engine.demo.app` and
:mod:`engine.demo.server` need the ``[demo]`` extra (FastAPI, uvicorn), so nothing here is
imported by the other commands.
"""
from __future__ import annotations

__all__: list = []
