"""The demo command and its HTTP API: predict's masks, refusals with status codes, the optional extra."""
import http.client
import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason='the [demo] extra is not installed: pip install -e ".[demo]"')
pytest.importorskip("uvicorn", reason='the [demo] extra is not installed: pip install -e ".[demo]"')

from _demo_helpers import (CLIP_SIZE, IMAGE_SIZE, MAX_FRAMES, MAX_UPLOAD, make_inputs, predict_mask,  # noqa: E402
                           predict_videos, read_frames, start_server, write_clip)
from engine.demo.results import DemoError, ResultStore, parse_threshold  # noqa: E402
from train_ultimate import main  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def server(inputs):
    srv = start_server(inputs[0])
    yield srv
    srv.stop()


def request(url: str, data=None, headers=None):
    """``(status, body bytes, content type)``; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def upload(server, data: bytes, name: str = "scene.png"):
    status, body, _ = request(f"{server.url}api/segment?name={name}", data=data,
                              headers={"Content-Type": "application/octet-stream"})
    return status, json.loads(body)


def test_page_has_the_controls_and_the_upload_limit(server):
    status, body, ctype = request(server.url)
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    for element in ('id="file"', 'type="range"', 'id="download"', 'id="image"', 'id="mask"', 'id="overlay"', "best.pt"):
        assert element in page
    assert f"&quot;maxUploadBytes&quot;: {MAX_UPLOAD}" in page


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_mask_download_equals_what_predict_writes(server, inputs, tmp_path, threshold):
    ckpt, image = inputs
    status, result = upload(server, image.read_bytes())
    assert status == 200 and (result["height"], result["width"]) == IMAGE_SIZE and result["stem"] == "scene"
    query = "" if threshold is None else f"?threshold={threshold}"
    status, png, ctype = request(f"{server.url}api/results/{result['id']}/mask.png{query}")
    assert status == 200 and ctype == "image/png"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).shape == IMAGE_SIZE
    assert png == predict_mask(ckpt, image, tmp_path / "out", threshold)


def test_threshold_zero_is_the_probability_map(server, inputs):
    _, result = upload(server, inputs[1].read_bytes())
    base = f"{server.url}api/results/{result['id']}/mask.png"
    assert request(base + "?threshold=0")[1] == request(base)[1]
    assert set(np.unique(cv2.imdecode(np.frombuffer(request(base + "?threshold=0.3")[1], np.uint8), -1))) <= {0, 255}


def test_image_and_overlay_are_jpegs_at_the_image_size(server, inputs):
    _, result = upload(server, inputs[1].read_bytes())
    for part in ("image.jpg", "overlay.jpg", "overlay.jpg?threshold=0.4"):
        status, body, ctype = request(f"{server.url}api/results/{result['id']}/{part}")
        assert status == 200 and ctype == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (*IMAGE_SIZE, 3)


@pytest.mark.parametrize("data", [b"just some text, not pixels", b"\x89PNG\r\n\x1a\n truncated", b""])
def test_non_images_are_refused_with_400(server, data):
    status, body = upload(server, data, name="notes.png")
    assert status == 400 and ("not an image" in body["error"] or "empty" in body["error"])
    assert "Traceback" not in body["error"]


def test_too_large_upload_is_refused_with_413(server):
    status, body = upload(server, b"\0" * (MAX_UPLOAD + 1))
    assert status == 413 and "limit" in body["error"]


def test_too_large_chunked_upload_is_refused_while_reading(server):
    host, port = server.sock.getsockname()[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    chunks = (b"\0" * 8192 for _ in range(MAX_UPLOAD // 8192 + 2))  # no Content-Length: counted as it arrives
    conn.request("POST", "/api/segment?name=big.png", body=chunks, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and "limit" in json.loads(resp.read())["error"]
    conn.close()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header claims ``width`` x ``height`` (a compressed "bomb" in miniature)."""
    png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]  # b"IHDR", size, depth, colour...
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


@pytest.mark.parametrize("width, height", [(12000, 10000), (20000, 20000)])  # under and over Pillow's own limit
def test_an_image_with_too_many_pixels_is_refused_before_decoding(server, width, height):
    status, body = upload(server, png_claiming(width, height))
    assert status == 413 and "megapixels" in body["error"]


@pytest.mark.parametrize("query, status", [("?threshold=2", 400), ("?threshold=nan", 400), ("?threshold=x", 400)])
def test_bad_threshold_is_refused(server, inputs, query, status):
    _, result = upload(server, inputs[1].read_bytes())
    code, body, _ = request(f"{server.url}api/results/{result['id']}/mask.png{query}")
    assert code == status and "threshold" in json.loads(body)["error"]


def test_unknown_result_is_404(server):
    status, body, _ = request(f"{server.url}api/results/unknown/mask.png")
    assert status == 404 and json.loads(body)["error"]


def test_a_non_ascii_name_keeps_its_letters(server, inputs):
    status, result = upload(server, inputs[1].read_bytes(), name="K%C3%A4fer%20%2F..%2Fx.png")  # "Käfer /../x.png"
    assert status == 200 and result["stem"] == "x"
    status, result = upload(server, inputs[1].read_bytes(), name="K%C3%A4fer.png")
    assert status == 200 and result["stem"] == "Käfer"
    with urllib.request.urlopen(f"{server.url}api/results/{result['id']}/mask.png", timeout=60) as resp:
        assert "K%C3%A4fer.png" in resp.headers["Content-Disposition"]


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_a_video_gives_the_mask_and_overlay_videos_predict_writes(server, inputs, tmp_path, threshold):
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    query = "" if threshold is None else f"&threshold={threshold}"
    status, body, _ = request(f"{server.url}api/segment?name=clip.mp4{query}", data=clip.read_bytes(),
                              headers={"Content-Type": "application/octet-stream"})
    result = json.loads(body)
    assert status == 200 and result["kind"] == "video" and result["stem"] == "clip" and result["frames"] == 5
    assert (result["height"], result["width"]) == CLIP_SIZE and result["threshold"] == threshold
    expected = predict_videos(inputs[0], clip, tmp_path / "out", threshold)
    for part, frames in zip(("mask", "overlay"), expected):
        status, data, ctype = request(f"{server.url}api/results/{result['id']}/video/{part}.mp4")
        assert status == 200 and ctype == "video/mp4"
        (tmp_path / f"{part}.mp4").write_bytes(data)
        served = read_frames(tmp_path / f"{part}.mp4")
        assert len(served) == len(frames) == 5
        for got, want in zip(served, frames):  # the same encoder on the same frames: exact
            np.testing.assert_array_equal(got, want)
    status, data, _ = request(f"{server.url}api/results/{result['id']}/video/original")
    assert status == 200 and data == clip.read_bytes()


def test_a_video_comes_with_webm_copies_the_browser_plays(server, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    status, body, _ = request(f"{server.url}api/segment?name=clip.mp4", data=clip.read_bytes(),
                              headers={"Content-Type": "application/octet-stream"})
    result = json.loads(body)
    assert status == 200 and result["previews"] == ["mask", "original", "overlay"]
    for part in result["previews"]:
        status, data, ctype = request(f"{server.url}api/results/{result['id']}/video/{part}.webm")
        assert status == 200 and ctype == "video/webm" and data[:4] == b"\x1a\x45\xdf\xa3"  # EBML (WebM)
        (tmp_path / f"{part}.webm").write_bytes(data)
        assert len(read_frames(tmp_path / f"{part}.webm")) == 5


def test_a_video_is_told_by_its_bytes_not_its_name(server, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=4)
    status, result = upload(server, clip.read_bytes(), name="holiday.png")
    assert status == 200 and result["kind"] == "video" and result["frames"] == 4


def test_a_video_over_the_frame_limit_is_refused_with_413(server, tmp_path):
    clip = write_clip(tmp_path / "long.mp4", frames=MAX_FRAMES + 2)
    status, body = upload(server, clip.read_bytes(), name="long.mp4")
    assert status == 413 and f"{MAX_FRAMES}-frame limit" in body["error"]


def test_a_broken_video_is_refused_with_400(server, tmp_path):
    data = write_clip(tmp_path / "clip.mp4", frames=5).read_bytes()
    status, body = upload(server, data[: len(data) // 3] + b"\0" * 64, name="broken.mp4")
    assert status == 400 and "not an image or a video" in body["error"] and "Traceback" not in body["error"]


def test_an_image_result_has_no_videos(server, inputs):
    _, result = upload(server, inputs[1].read_bytes())
    assert request(f"{server.url}api/results/{result['id']}/video/mask.mp4")[0] == 404


class _BrokenModel:
    def predict(self, image):
        raise RuntimeError("out of memory")


def test_a_failing_model_answers_500_with_a_message():
    from engine.demo.app import create_app
    from engine.demo.server import ServerThread

    _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    with ServerThread(create_app(_BrokenModel())) as srv:
        status, body = upload(srv, png.tobytes())
    assert status == 500 and "out of memory" in body["error"] and "Traceback" not in body["error"]


def test_a_taken_port_is_named():
    from engine.demo.server import bind

    with bind("127.0.0.1", 0) as taken, pytest.raises(OSError, match="--port"):
        bind("127.0.0.1", taken.getsockname()[1])


def test_result_store_drops_the_oldest_first():
    store = ResultStore(capacity=2)
    keys = [store.add(object()) for _ in range(3)]  # type: ignore[arg-type]
    with pytest.raises(DemoError) as info:
        store.get(keys[0])
    assert info.value.status == 404
    assert store.get(keys[2]) is not None


def test_parse_threshold():
    assert parse_threshold(None) is None and parse_threshold("") is None and parse_threshold("0") is None
    assert parse_threshold("0.5") == 0.5 and parse_threshold("1") == 1.0
    for bad in ("-0.1", "1.5", "inf", "abc"):
        with pytest.raises(DemoError):
            parse_threshold(bad)


def test_without_the_extra_demo_names_the_install_and_exits_2(inputs, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    result = CliRunner().invoke(main, ["demo", "--checkpoint", str(inputs[0])])
    assert result.exit_code == 2
    assert 'pip install -e ".[demo]"' in result.output


def test_bad_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["demo", "--checkpoint", str(bad), "--port", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_importing_the_cli_does_not_import_fastapi():
    code = "import sys, train_ultimate; sys.exit('fastapi' in sys.modules or 'uvicorn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_demo_command_serves_on_a_free_port_it_prints(inputs, monkeypatch):
    import engine.demo.server as server_module

    served = {}
    monkeypatch.setattr(server_module, "serve", lambda app, sock: served.update(app=app, sock=sock))
    result = CliRunner().invoke(main, ["demo", "--checkpoint", str(inputs[0]), "--port", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    url = next(word for word in result.output.split() if word.startswith("http://127.0.0.1:"))
    assert url == f"http://127.0.0.1:{served['sock'].getsockname()[1]}/" and not url.endswith(":0/")
    with server_module.ServerThread(served["app"], sock=served["sock"]):
        status, body, _ = request(url)
    assert status == 200 and b'id="file"' in body
