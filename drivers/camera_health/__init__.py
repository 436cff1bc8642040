"""Camera picture health: open the stream, look at a few frames, report numbers.

Each poll opens the camera's stream (RTSP, HTTP/MJPEG or a file) with OpenCV's FFmpeg
backend in a worker thread under a deadline, decodes ``frames`` frames (``skip`` frames
apart) and computes, on a copy scaled to ``analysis_width``:

* ``brightness`` - mean luma 0..255 (lens covered, IR failed at night: too dark)
* ``sharpness`` - variance of the Laplacian (defocused, fogged, smeared lens: blurred)
* ``frame_diff`` - largest mean absolute difference between consecutive analysed frames;
  ~0 means a frozen picture (encoder hung, replayed still image)
* ``scene_distance`` - Bhattacharyya distance of the colour histogram to a reference
  learned from the first healthy poll (camera turned away, view blocked: scene change)

FRAMES NEVER LEAVE THE AGENT: pixels live only inside the worker thread; records carry
numbers and short strings, and the reference is a 96-bin histogram, not an image.

Records: ``Sample("camera_health")`` every poll; ``Event("camera_tamper")`` (reason
too_dark | blurred | scene_change) and ``Event("video_loss")`` (reason unreachable |
no_frames | frozen | timeout) when a problem starts and again every ``repeat_s`` while it
lasts, ``camera_tamper_cleared`` / ``video_restored`` when it ends. A stream that cannot be
opened is a measurement (video_loss), not a driver failure; only bad configuration
raises ``DeviceError("config")``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Record, Sample

log = logging.getLogger(__name__)

HIST_BINS = 32


class Options(SecretFields):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1)  # rtsp://cam/stream1, http://cam/mjpeg, /path/file.mp4
    username: str | None = None
    #: a secret (campus_sense.secret): password / password_file / password_env; read per capture
    password: Secret | None = None
    frames: int = Field(6, ge=2, le=100)  # frames analysed per poll
    skip: int = Field(2, ge=0, le=100)  # frames grabbed (not analysed) between two analysed ones
    open_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    analysis_width: int = Field(320, ge=32, le=4096)
    dark_threshold: float = Field(35.0, ge=0, le=255)  # mean luma below -> too_dark
    blur_threshold: float = Field(50.0, ge=0)  # Laplacian variance below -> blurred
    frozen_threshold: float = Field(0.2, ge=0)  # max consecutive mean |diff| below -> frozen
    scene_threshold: float | None = Field(0.4, gt=0, le=1)  # histogram distance above -> scene_change
    reference_file: Path | None = None  # persist the learned reference histogram (JSON)
    repeat_s: float = Field(900.0, gt=0)  # re-send an ongoing problem event this often

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.password:
            raise ValueError("do not put a password in the URL; use username + password_file")
        return v

    @model_validator(mode="after")
    def _creds(self) -> "Options":
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password (password_file / password_env) go together")
        return self


def redact_url(url: str) -> str:
    """URL without user info (for messages and logs)."""
    p = urlsplit(url)
    if not p.scheme or p.scheme == "file" or "@" not in p.netloc:
        return url
    return urlunsplit((p.scheme, p.netloc.rsplit("@", 1)[1], p.path, p.query, p.fragment))


def _with_credentials(url: str, user: str, password: str) -> str:
    p = urlsplit(url)
    host = p.netloc.rsplit("@", 1)[-1]
    return urlunsplit((p.scheme, f"{quote(user, safe='')}:{quote(password, safe='')}@{host}", p.path, p.query,
                       p.fragment))


@dataclass(slots=True)
class Capture:
    """What the worker thread hands back: numbers only."""
    ok: bool
    reason: str | None = None  # unreachable | no_frames | timeout
    error: str | None = None
    frames: int = 0
    width: int = 0
    height: int = 0
    open_s: float = 0.0
    fps: float | None = None
    fps_nominal: float | None = None
    brightness: float | None = None
    sharpness: float | None = None
    frame_diff: float | None = None
    hist: list[float] = field(default_factory=list)


def _hist(cv2, np, img) -> Any:
    hs = [cv2.calcHist([img], [c], None, [HIST_BINS], [0, 256]).ravel() for c in range(3)]
    h = np.concatenate(hs).astype("float32")
    return h / max(float(h.sum()), 1.0)


def capture_metrics(url: str, opts: Options) -> Capture:
    """Blocking: open ``url``, read frames, compute metrics. Runs in a worker thread."""
    import cv2
    import numpy as np

    t0 = time.monotonic()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(opts.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(opts.read_timeout_s * 1000)]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    try:
        open_s = time.monotonic() - t0
        if not cap.isOpened():
            return Capture(False, "unreachable", "stream could not be opened", open_s=open_s)
        nominal = cap.get(cv2.CAP_PROP_FPS) or None
        grays, hist_sum, sharp, bright = [], None, [], []
        w = h = 0
        read = 0
        t1 = time.monotonic()
        for i in range(opts.frames):
            if i:
                for _ in range(opts.skip):
                    if not cap.grab():
                        break
                    read += 1
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            read += 1
            h, w = frame.shape[:2]
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            if w > opts.analysis_width:
                scale = opts.analysis_width / w
                frame = cv2.resize(frame, (opts.analysis_width, max(1, round(h * scale))),
                                   interpolation=cv2.INTER_AREA)
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            bright.append(float(gray.mean()))
            sharp.append(float(cv2.Laplacian(gray, cv2.CV_64F).var()))
            hh = _hist(cv2, np, frame)
            hist_sum = hh if hist_sum is None else hist_sum + hh
            grays.append(gray)
        dt_read = time.monotonic() - t1
        if not grays:
            return Capture(False, "no_frames", "stream opened but no frame could be decoded", open_s=open_s,
                           fps_nominal=nominal, width=w, height=h)
        diffs = [float(cv2.absdiff(a, b).mean()) for a, b in zip(grays, grays[1:])]
        hist = hist_sum / len(grays)
        return Capture(
            True, frames=len(grays), width=int(w), height=int(h), open_s=open_s,
            fps=(read / dt_read) if dt_read > 0 and read > 1 else None,
            fps_nominal=float(nominal) if nominal else None,
            brightness=sum(bright) / len(bright), sharpness=sum(sharp) / len(sharp),
            frame_diff=max(diffs) if diffs else None, hist=[float(x) for x in hist])
    finally:
        cap.release()


def bhattacharyya(a: list[float], b: list[float]) -> float:
    """Distance of two normalized histograms: 0 identical .. 1 disjoint (OpenCV HISTCMP_BHATTACHARYYA)."""
    import cv2
    import numpy as np

    return float(cv2.compareHist(np.asarray(a, "float32"), np.asarray(b, "float32"), cv2.HISTCMP_BHATTACHARYYA))


class _Problem:
    __slots__ = ("since", "sent")

    def __init__(self, now: float):
        self.since, self.sent = now, 0.0


class CameraHealthDriver:
    name = "camera_health"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, tags
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camhealth-{device_id}")
        self._running: concurrent.futures.Future | None = None
        self._problems: dict[tuple[str, str], _Problem] = {}  # (event type, reason) -> state
        self.reference: list[float] | None = None
        if options.reference_file is not None and options.reference_file.is_file():
            try:
                ref = json.loads(options.reference_file.read_text())["hist"]
                if isinstance(ref, list) and len(ref) == 3 * HIST_BINS:
                    self.reference = [float(x) for x in ref]
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: ignoring unreadable reference_file %s (%s)", device_id, options.reference_file, e)
        if urlsplit(options.url).scheme.lower() in ("rtsp", "rtsps"):
            # RTSP over TCP: survives NAT/firewalls and does not lose packets like UDP.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

    def _url(self) -> str:
        o = self.opts
        if o.username is None:
            return o.url
        try:  # read now (campus_sense.secret rotation rule)
            password = o.password.reveal()  # type: ignore[union-attr]
        except SecretError as e:
            raise DeviceError("config", str(e)) from None
        if not urlsplit(o.url).netloc:
            raise DeviceError("config", "username/password need a network URL (rtsp://, http://)")
        return _with_credentials(o.url, o.username, password)

    async def _capture(self) -> Capture:
        if self._running is not None and not self._running.done():
            return Capture(False, "timeout", "previous capture still running (stream hangs)")
        url = self._url()
        fut = self._pool.submit(capture_metrics, url, self.opts)
        self._running = fut
        budget = self.opts.open_timeout_s + self.opts.read_timeout_s * 2 + 5.0
        try:
            async with asyncio.timeout(budget):
                return await asyncio.wrap_future(fut)
        except (TimeoutError, asyncio.TimeoutError):
            return Capture(False, "timeout", f"no frames within {budget:g} s")
        except Exception as e:  # noqa: BLE001 - OpenCV errors; never echo the URL with credentials
            return Capture(False, "unreachable", f"{type(e).__name__}: {str(e).replace(url, redact_url(url))}")

    def _evaluate(self, c: Capture) -> tuple[dict[str, Any], list[tuple[str, str, dict[str, Any]]]]:
        o = self.opts
        fields: dict[str, Any] = {"ok": c.ok, "open_s": round(c.open_s, 3)}
        found: list[tuple[str, str, dict[str, Any]]] = []  # (event type, reason, data)
        if not c.ok:
            fields["reason"] = c.reason
            found.append(("video_loss", c.reason or "unreachable", {"error": c.error}))
            return fields, found
        fields.update(frames=c.frames, width=c.width, height=c.height, brightness=round(c.brightness, 2),
                      sharpness=round(c.sharpness, 2))
        for k in ("fps", "fps_nominal", "frame_diff"):
            v = getattr(c, k)
            if v is not None:
                fields[k] = round(v, 3)
        metrics = {"brightness": fields["brightness"], "sharpness": fields["sharpness"]}
        dark = c.brightness < o.dark_threshold
        blurred = not dark and c.sharpness < o.blur_threshold
        frozen = not dark and c.frame_diff is not None and c.frame_diff < o.frozen_threshold
        if dark:
            found.append(("camera_tamper", "too_dark", {**metrics, "threshold": o.dark_threshold}))
        if blurred:
            found.append(("camera_tamper", "blurred", {**metrics, "threshold": o.blur_threshold}))
        if frozen:
            found.append(("video_loss", "frozen", {"frame_diff": fields["frame_diff"], "frames": c.frames}))
        if o.scene_threshold is not None and not dark:
            if self.reference is None:
                if not (blurred or frozen):
                    self._learn(c.hist)
            else:
                d = bhattacharyya(self.reference, c.hist)
                fields["scene_distance"] = round(d, 4)
                if d > o.scene_threshold:
                    found.append(("camera_tamper", "scene_change",
                                  {"scene_distance": fields["scene_distance"], "threshold": o.scene_threshold}))
        problems = sorted(r for _, r, _ in found)
        fields["status"] = ",".join(problems) if problems else "ok"
        return fields, found

    def _learn(self, hist: list[float]) -> None:
        self.reference = list(hist)
        f = self.opts.reference_file
        if f is not None:
            try:
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_suffix(f.suffix + ".tmp")
                tmp.write_text(json.dumps({"hist": self.reference, "learned_ms": int(time.time() * 1000)}))
                tmp.replace(f)
            except OSError as e:
                log.warning("%s: cannot write reference_file %s (%s)", self.device_id, f, e)
        log.info("%s: learned the reference scene", self.device_id)

    def reset_reference(self) -> None:
        """Forget the reference scene (camera re-aimed on purpose); the next healthy poll learns it."""
        self.reference = None
        if self.opts.reference_file is not None:
            self.opts.reference_file.unlink(missing_ok=True)

    async def poll(self) -> list[Record]:
        c = await self._capture()
        fields, found = self._evaluate(c)
        now = time.monotonic()
        out: list[Record] = [Sample("camera_health", self.device_id, fields, dict(self.tags))]
        current = {(t, r) for t, r, _ in found}
        for t, r, data in found:
            p = self._problems.get((t, r))
            if p is None:
                p = self._problems[(t, r)] = _Problem(now)
            if p.sent == 0.0 or now - p.sent >= self.opts.repeat_s:
                p.sent = now
                data = {k: v for k, v in data.items() if v is not None}
                out.append(Event(self.device_id, t, "warning",
                                 {"reason": r, "origin": "camera_health", "since_s": round(now - p.since, 1),
                                  "url": redact_url(self.opts.url), **data}, dict(self.tags)))
        for key in [k for k in self._problems if k not in current]:
            t, r = key
            if t == "camera_tamper" and not c.ok:
                continue  # no picture: cannot tell whether the tamper condition is over
            p = self._problems.pop(key)
            cleared = "camera_tamper_cleared" if t == "camera_tamper" else "video_restored"
            # a video_loss ending because the stream is now unreadable in another way is not "restored"
            if t == "video_loss" and any(tt == "video_loss" for tt, _ in current):
                continue
            out.append(Event(self.device_id, cleared, "info",
                             {"reason": r, "origin": "camera_health", "duration_s": round(now - p.since, 1)},
                             dict(self.tags)))
        return out

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create(device_id: str, options: Options, tags: dict[str, str]) -> CameraHealthDriver:
    return CameraHealthDriver(device_id, options, tags)
