"""A simulated IP camera's video stream: MJPEG over HTTP (``multipart/x-mixed-replace``, what many
IP cameras serve at ``/video.mjpg``) with Basic auth, for the demo's camera_health device.

Frames are drawn with numpy/OpenCV (both already needed by the camera_health driver): a fixed,
textured "classroom" scene (sharp, well lit), a moving object and sensor noise, so a health poll
sees a usable, live picture. ``cover(True)`` makes the picture black (lens covered), ``freeze(True)``
repeats one frame (hung encoder). Frames are only encoded while a client reads the stream.

    cam = MjpegCamera("viewer", "s3cret").start()
    ... open http://127.0.0.1:{cam.port}/video.mjpg ...
    cam.stop()
"""
from __future__ import annotations

import base64
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

__all__ = ["MjpegCamera"]


class MjpegCamera:
    def __init__(self, username: str, password: str, *, width: int = 320, height: int = 240,
                 fps: float = 10.0, path: str = "/video.mjpg", seed: int = 7):
        self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.width, self.height, self.fps, self.path = width, height, fps, path
        self.covered = self.frozen = False
        self.clients_total = self.auth_failures = 0
        rng = np.random.default_rng(seed)
        # the scene: a wall gradient, a "blackboard", desks, and a fine texture so it is sharp
        y = np.linspace(0, 1, height)[:, None, None]
        scene = (np.array([150, 170, 185]) * (0.75 + 0.35 * y)).repeat(width, axis=1)
        scene[30:110, 40:280] = (40, 80, 50)
        for row in range(140, height, 35):
            for col in range(20, width - 40, 70):
                scene[row:row + 18, col:col + 50] = (60, 110, 160)
        scene += rng.normal(0, 14, scene.shape)
        self._scene = np.clip(scene, 0, 255).astype(np.uint8)
        self._rng = rng
        self._last: bytes | None = None
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def cover(self, on: bool = True) -> None:
        self.covered = on

    def freeze(self, on: bool = True) -> None:
        self.frozen = on

    def frame(self, t: float) -> bytes:
        import cv2
        if self.frozen and self._last is not None:
            return self._last
        if self.covered:
            img = np.zeros((self.height, self.width, 3), np.uint8)
        else:
            img = self._scene.copy()
            x = int((self.width - 40) * (0.5 + 0.5 * np.sin(t / 2.0)))
            cv2.rectangle(img, (x, 120), (x + 40, 200), (30, 30, 200), -1)        # someone walking by
            noise = self._rng.integers(-6, 7, img.shape, dtype=np.int16)
            img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            cv2.putText(img, time.strftime("%H:%M:%S"), (8, self.height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        self._last = jpg.tobytes()
        return self._last

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "MjpegCamera":
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                if self.path.split("?")[0] != cam.path:
                    self.send_error(404)
                    return
                if not hmac.compare_digest(self.headers.get("Authorization") or "", cam.auth):
                    cam.auth_failures += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                cam.clients_total += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while cam._server is not None:
                        jpg = cam.frame(time.monotonic())
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                        time.sleep(1.0 / cam.fps)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="mjpeg-camera").start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
