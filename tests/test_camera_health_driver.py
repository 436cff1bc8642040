"""camera_health driver on real video: ffmpeg-generated clips (files) and a local MJPEG-over-HTTP
server with Basic auth; OpenCV's FFmpeg backend reads them exactly as it reads a camera."""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import secrets
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.base import Event, Sample
from drivers.camera_health import Options, create, redact_url

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")]

SIZE = "320x240"


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-nostdin", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    enc = ["-t", "3", "-pix_fmt", "yuv420p", "-c:v", "libx264"]
    v = {n: d / f"{n}.mp4" for n in ("good", "black", "blurred", "frozen", "moved")}
    _ff("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate=10", *enc, str(v["good"]))
    _ff("-f", "lavfi", "-i", f"color=c=black:size={SIZE}:rate=10", *enc, str(v["black"]))
    _ff("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate=10", "-vf", "gblur=sigma=6", *enc, str(v["blurred"]))
    _ff("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate=10", "-frames:v", "1", str(d / "still.png"))
    _ff("-loop", "1", "-framerate", "10", "-i", str(d / "still.png"), *enc, str(v["frozen"]))
    # camera turned to another scene (moving, sharp, bright: only the histogram differs)
    _ff("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate=10,hue=h=90:s=0.3", *enc, str(v["moved"]))
    jpg = d / "jpg"
    jpg.mkdir()
    _ff("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate=10", "-frames:v", "20", "-q:v", "5",
        str(jpg / "f%03d.jpg"))
    v["jpegs"] = jpg
    return v


def _records_are_numbers_only(recs) -> None:
    """FRAMES NEVER LEAVE THE AGENT: nothing but short scalars in any record."""
    for r in recs:
        d = dataclasses.asdict(r)
        payload = {**d.get("fields", {}), **d.get("data", {}), **d.get("tags", {})}
        for k, v in payload.items():
            assert v is None or isinstance(v, (bool, int, float, str)), (k, type(v))
            assert not isinstance(v, str) or len(v) < 200, k
        assert len(json.dumps(d, default=str)) < 2000


def _events(recs):
    return [(r.type, r.data["reason"]) for r in recs if isinstance(r, Event)]


def _sample(recs) -> Sample:
    (s,) = [r for r in recs if isinstance(r, Sample)]
    assert s.measurement == "camera_health"
    return s


async def test_healthy_file_and_scene_change(videos, tmp_path):
    link = tmp_path / "cam.mp4"
    link.symlink_to(videos["good"])
    ref = tmp_path / "ref" / "cam-a1.json"
    d = create("cam-a1", Options(url=str(link), reference_file=ref), {"type": "camera"})
    try:
        recs = await d.poll()
        _records_are_numbers_only(recs)
        s = _sample(recs)
        assert s.fields["ok"] is True and s.fields["status"] == "ok"
        assert (s.fields["width"], s.fields["height"]) == (320, 240)
        assert s.fields["frames"] == 6 and s.fields["fps_nominal"] == 10.0 and s.fields["fps"] > 0
        assert s.fields["brightness"] > 60 and s.fields["sharpness"] > 200 and s.fields["frame_diff"] > 1
        assert s.tags == {"type": "camera"}
        assert _events(recs) == []
        assert ref.is_file() and len(json.loads(ref.read_text())["hist"]) == 96  # a histogram, not a picture

        recs = await d.poll()
        assert _sample(recs).fields["scene_distance"] < 0.1 and _events(recs) == []

        link.unlink()
        link.symlink_to(videos["moved"])  # someone turned the camera
        recs = await d.poll()
        _records_are_numbers_only(recs)
        assert _events(recs) == [("camera_tamper", "scene_change")]
        ev = [r for r in recs if isinstance(r, Event)][0]
        assert ev.severity == "warning" and ev.data["scene_distance"] > 0.4 and ev.tags == {"type": "camera"}
        assert _events(await d.poll()) == []  # ongoing: not repeated before repeat_s
    finally:
        await d.close()
    # the reference survives a restart of the agent
    d2 = create("cam-a1", Options(url=str(link), reference_file=ref), {})
    try:
        assert _events(await d2.poll()) == [("camera_tamper", "scene_change")]
        link.unlink()
        link.symlink_to(videos["good"])
        assert _events(await d2.poll()) == [("camera_tamper_cleared", "scene_change")]
    finally:
        await d2.close()


@pytest.mark.parametrize("clip,expected", [
    ("black", [("camera_tamper", "too_dark")]),
    ("blurred", [("camera_tamper", "blurred")]),
    ("frozen", [("video_loss", "frozen")]),
])
async def test_problem_clips(videos, clip, expected):
    d = create("cam-b2", Options(url=str(videos[clip])), {})
    try:
        recs = await d.poll()
    finally:
        await d.close()
    _records_are_numbers_only(recs)
    assert _events(recs) == expected
    s = _sample(recs)
    assert s.fields["ok"] is True and s.fields["status"] == expected[0][1]
    if clip == "black":
        assert s.fields["brightness"] < 5
    if clip == "blurred":
        assert s.fields["sharpness"] < 50
    if clip == "frozen":
        assert s.fields["frame_diff"] < 0.2


async def test_repeat_and_restore(videos, tmp_path):
    link = tmp_path / "cam.mp4"
    link.symlink_to(videos["black"])
    d = create("cam-c3", Options(url=str(link), repeat_s=0.01, scene_threshold=None), {})
    try:
        assert _events(await d.poll()) == [("camera_tamper", "too_dark")]
        time.sleep(0.02)
        assert _events(await d.poll()) == [("camera_tamper", "too_dark")]  # still dark: re-sent
        link.unlink()
        link.symlink_to(tmp_path / "gone.mp4")  # stream lost while dark: tamper state unknown, kept
        assert _events(await d.poll()) == [("video_loss", "unreachable")]
        link.unlink()
        link.symlink_to(videos["good"])
        recs = await d.poll()
        assert sorted(_events(recs)) == [("camera_tamper_cleared", "too_dark"), ("video_restored", "unreachable")]
        assert [r.severity for r in recs if isinstance(r, Event)] == ["info", "info"]
    finally:
        await d.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_and_missing_stream_is_video_loss(tmp_path):
    for url in (f"http://127.0.0.1:{_free_port()}/video.mjpg", str(tmp_path / "missing.mp4")):
        d = create("cam-d4", Options(url=url, open_timeout_s=2, read_timeout_s=2), {})
        try:
            recs = await d.poll()
        finally:
            await d.close()
        _records_are_numbers_only(recs)
        assert _events(recs) == [("video_loss", "unreachable")]
        s = _sample(recs)
        assert s.fields == {"ok": False, "open_s": s.fields["open_s"], "reason": "unreachable"}


class MjpegServer:
    """multipart/x-mixed-replace JPEG stream (what many IP cameras serve at /video.mjpg), Basic auth."""

    def __init__(self, jpegs: list[bytes], user: str, password: str, fps: float = 20.0):
        self.jpegs, self.fps = jpegs, fps
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen_auth: list[str] = []
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                got = self.headers.get("Authorization")
                srv.seen_auth.append("ok" if got == srv.auth else ("bad" if got else "none"))
                if got != srv.auth:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
                self.end_headers()
                try:
                    for i in range(200):
                        j = srv.jpegs[i % len(srv.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(j)).encode() + b"\r\n\r\n" + j + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1 / srv.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_mjpeg_over_http_with_credentials_never_leaked(videos, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    user, pw = "viewer", secrets.token_urlsafe(12)
    jpegs = [p.read_bytes() for p in sorted(videos["jpegs"].glob("*.jpg"))]
    srv = MjpegServer(jpegs, user, pw)
    pf = tmp_path / "cam.pass"
    pf.write_text(pw + "\n")
    url = f"http://127.0.0.1:{srv.port}/video.mjpg"
    try:
        d = create("cam-e5", Options(url=url, username=user, password_file=pf, frames=4, skip=1), {})
        try:
            recs = await d.poll()
        finally:
            await d.close()
        _records_are_numbers_only(recs)
        s = _sample(recs)
        assert s.fields["ok"] is True, s.fields
        assert (s.fields["width"], s.fields["height"]) == (320, 240) and s.fields["frames"] == 4
        assert s.fields["sharpness"] > 200 and s.fields["fps"] > 0
        assert "ok" in srv.seen_auth

        pf.write_text("wrong-" + pw)
        d = create("cam-e5", Options(url=url, username=user, password_file=pf, open_timeout_s=3), {})
        try:
            recs = await d.poll()
        finally:
            await d.close()
        assert _events(recs) == [("video_loss", "unreachable")]
        assert "bad" in srv.seen_auth
    finally:
        srv.stop()
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, json.dumps([dataclasses.asdict(r) for r in recs])):
        assert pw not in text


def test_options_validation(tmp_path):
    with pytest.raises(ValidationError):
        Options(url="rtsp://admin:secret@10.0.0.5/stream1")  # password in URL
    with pytest.raises(ValidationError):
        Options(url="rtsp://10.0.0.5/stream1", username="admin")  # no password_file
    with pytest.raises(ValidationError):
        Options(url="rtsp://10.0.0.5/stream1", bogus=1)
    assert redact_url("rtsp://admin:x@10.0.0.5:554/s?a=1") == "rtsp://10.0.0.5:554/s?a=1"
    assert redact_url("/var/video.mp4") == "/var/video.mp4"


async def test_missing_password_file_is_config_error(tmp_path):
    from drivers.base import DeviceError

    with pytest.raises(ValidationError, match="password_file"):  # checked when the config is loaded
        Options(url="rtsp://127.0.0.1:1/s", username="u", password_file=tmp_path / "nope")
    pf = tmp_path / "pw"
    pf.write_text("pw\n")
    d = create("cam-f6", Options(url="rtsp://127.0.0.1:1/s", username="u", password_file=pf), {})
    pf.unlink()  # gone after loading: the poll says config (the file is re-read per capture)
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "config"


async def test_silent_server_hits_the_open_deadline():
    """A host that accepts TCP and never answers (hung camera) must not hang the poll."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(ls.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    d = create("cam-g7", Options(url=f"http://127.0.0.1:{ls.getsockname()[1]}/video.mjpg",
                                 open_timeout_s=1, read_timeout_s=1), {})
    try:
        recs = await d.poll()
    finally:
        await d.close()
        stop.set()
        for c in conns:
            c.close()
        ls.close()
    assert [t for t, _ in _events(recs)] == ["video_loss"]
    assert _sample(recs).fields["ok"] is False


def test_agent_config_accepts_camera_health(tmp_path):
    from edge_agent.config import load

    (tmp_path / "mqtt.pass").write_text("x\n")
    (tmp_path / "cam.pass").write_text("y\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: bldg-a, site: north, building: A}}
mqtt: {{host: 127.0.0.1, username: bldg-a, password_file: {tmp_path / 'mqtt.pass'}}}
queue: {{path: {tmp_path / 'q.db'}}}
devices:
  - id: cam-a101
    driver: camera_health
    interval_s: 120
    type: camera
    options: {{url: "rtsp://10.0.0.5:554/stream2", username: viewer, password_file: {tmp_path / 'cam.pass'}}}
""")
    loaded = load(cfg)
    assert loaded.options[0].username == "viewer"
    cfg.write_text(cfg.read_text().replace("username: viewer", "username: viewer, blur: 3"))
    with pytest.raises(Exception) as ei:
        load(cfg)
    assert "devices.0.options.blur" in str(ei.value)
