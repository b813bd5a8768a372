"""The review page's local web server.

Python's standard ``http.server`` (ThreadingHTTPServer) does the HTTP: one user on
127.0.0.1, a handful of JSON and media routes, no templates, sessions or async. A framework
(Flask, Starlette) would add dependencies and nothing this needs; request parsing is the
standard library's, not ours. What we add is the safety a local server must have anyway:

* it binds 127.0.0.1 only, and checks the Host header (a web page elsewhere cannot reach it
  through DNS rebinding);
* every request carries the per-run random token printed in the URL (query ``token`` or
  header ``X-Flam-Token``), compared in constant time;
* it serves only the page's own packaged files and, by file name in the review, the audio
  and outputs that review names: no path from a request ever reaches the file system;
* bodies are JSON objects of bounded size; anything else is a 4xx and one log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from .folder import DecisionError, ReviewFolder
from .media import MediaError, audio_clip, probability_curves, spectrogram_picture

MAX_BODY_BYTES = 64 * 1024
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/review.js": ("review.js", "text/javascript; charset=utf-8"),
                "/review.css": ("review.css", "text/css; charset=utf-8")}
PICTURE_CACHE_DIR = ".review-cache"  # inside the reviewed folder: whole-file pictures
PUBLIC_FILES = ("/review.js", "/review.css", "/favicon.ico")


class ReviewServer:
    """Serves one :class:`ReviewFolder`; ``url`` holds the token. ``log`` gets one line per
    refused request."""

    def __init__(self, folder: ReviewFolder, port: int = 0, log: Callable[[str], None] = print):
        self.folder = folder
        self.token = secrets.token_urlsafe(24)
        self.log = log
        self._pictures: OrderedDict[tuple, bytes] = OrderedDict()
        self._pictures_lock = threading.Lock()
        self._curves: dict[str, dict] = {}
        handler = type("Handler", (_Handler,), {"review": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        # The first picture would otherwise pay for importing torch, torchaudio and matplotlib.
        threading.Thread(target=_warm_up, daemon=True).start()
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop a server running in another thread (waits for its loop), then close."""
        self.httpd.shutdown()
        self.close()

    def close(self) -> None:
        """Release the socket. After :meth:`serve_forever` ended in this thread (Ctrl-C), this is
        all that is left to do: ``shutdown`` would wait for a loop that will never run again."""
        self.httpd.server_close()

    # -- data the routes return ---------------------------------------------------------------
    def file_view(self, stem: str, with_scores: bool = True) -> dict:
        """One file for the page: its events, and (``with_scores``) detect's curves."""
        review_file = self.folder.file(stem)
        summary, events = self.folder.events_of(stem)
        view = {**summary, "sample_rate": review_file.sample_rate,
                "queries": review_file.queries, "thresholds": review_file.thresholds,
                "events": events}
        if not with_scores:
            return view
        if stem not in self._curves:
            scores = self.folder.directory / f"{stem}.scores.tsv"
            try:
                self._curves[stem] = probability_curves(scores, review_file.queries)
            except (OSError, ValueError) as exc:
                self._curves[stem] = {"times": [], "step": 0.0, "curves": {},
                                      "error": f"{scores.name}: {exc.__class__.__name__}"}
        return {**view, "scores": self._curves[stem]}

    def picture(self, stem: str, start: float, end: float, width: int) -> bytes:
        review_file = self.folder.file(stem)
        if review_file.audio is None:
            raise MediaError(f"{review_file.file}: audio file moved or deleted")
        whole = start <= 0 and end >= review_file.duration
        key = (stem, round(start, 3), round(end, 3), width)
        with self._pictures_lock:
            if key in self._pictures:
                self._pictures.move_to_end(key)
                return self._pictures[key]
        disk = None
        if whole:  # computed once per file and kept beside the review
            stat = review_file.audio.stat()
            name = hashlib.sha256(f"{review_file.audio}|{stat.st_size}|{stat.st_mtime_ns}|"
                                  f"{width}".encode()).hexdigest()[:32]
            disk = self.folder.directory / PICTURE_CACHE_DIR / f"{name}.png"
            if disk.is_file():
                data = disk.read_bytes()
                self._remember(key, data)
                return data
        data = spectrogram_picture(review_file.audio, start, end, width)
        if disk is not None:
            from ..files import atomic_path

            try:
                with atomic_path(disk) as tmp:
                    tmp.write_bytes(data)
            except OSError as exc:  # a read-only folder still reviews; it just recomputes
                self.log(f"warning: {disk}: cannot cache the picture ({exc.strerror})")
        self._remember(key, data)
        return data

    def _remember(self, key, data: bytes) -> None:
        with self._pictures_lock:
            self._pictures[key] = data
            while len(self._pictures) > 64:
                self._pictures.popitem(last=False)

    def clip(self, stem: str, start: float, end: float) -> bytes:
        review_file = self.folder.file(stem)
        if review_file.audio is None:
            raise MediaError(f"{review_file.file}: audio file moved or deleted")
        return audio_clip(review_file.audio, start, end)


def _warm_up() -> None:
    import matplotlib.image  # noqa: F401
    import torchaudio  # noqa: F401


class _Handler(BaseHTTPRequestHandler):
    review: ReviewServer
    server_version = "flam-review"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # the standard one writes every request to stderr
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode(), "application/json")

    def _refuse(self, status: int, message: str) -> None:
        self.review.log(f"review: refused {self.command} {urlsplit(self.path).path!r}: "
                        f"{status} {message}")
        self.close_connection = True
        try:
            self._json({"error": message}, status)
        except OSError:
            pass

    def _allowed(self, query: dict, path: str = "") -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in (f"127.0.0.1:{self.review.port}", f"localhost:{self.review.port}"):
            self._refuse(403, "wrong Host header")
            return False
        if path in PUBLIC_FILES:  # the page's own code: nothing secret, and <script> sends no token
            return True
        given = (query.get("token") or [""])[0] or self.headers.get("X-Flam-Token", "")
        if not hmac.compare_digest(given.encode(), self.review.token.encode()):
            self._refuse(403, "missing or wrong token (use the URL flam review printed)")
            return False
        return True

    def _parse(self):
        parts = urlsplit(self.path)
        try:
            query = parse_qs(parts.query, strict_parsing=False, max_num_fields=20)
        except ValueError:
            query = None
        return parts.path, query

    @staticmethod
    def _number(query: dict, name: str, default=None) -> float:
        raw = (query.get(name) or [None])[0]
        if raw is None:
            if default is None:
                raise MediaError(f"missing {name}")
            return default
        try:
            value = float(raw)
        except ValueError:
            raise MediaError(f"{name}={raw[:40]!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise MediaError(f"{name} must be finite")
        return value

    # -- routes -------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path, query = self._parse()
        if query is None:
            return self._refuse(400, "malformed query string")
        if not self._allowed(query, path):
            return
        if path == "/favicon.ico":  # browsers ask on their own, without the token
            return self._send(204, b"", "image/x-icon")
        try:
            if path in STATIC_FILES:
                name, content_type = STATIC_FILES[path]
                body = resources.files("flamcli.review").joinpath("static", name).read_bytes()
                return self._send(200, body, content_type,
                                  {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                                                              "media-src 'self'; object-src 'none'"})
            if path == "/api/files":
                folder = self.review.folder
                return self._json({"folder": folder.directory.name or str(folder.directory),
                                   "files": folder.summaries(), "resume": folder.last_decision,
                                   "problems": folder.problems})
            stem = (query.get("file") or [""])[0]
            if path == "/api/file":
                return self._json(self.review.file_view(stem))
            if path == "/api/spectrogram":
                start, end = self._number(query, "start", 0.0), self._number(query, "end", 0.0)
                width = int(self._number(query, "width", 1024.0))
                review_file = self.review.folder.file(stem)
                end = review_file.duration if end <= 0 else end
                data = self.review.picture(stem, start, end, width)
                return self._send(200, data, "image/png")
            if path == "/api/audio":
                start, end = self._number(query, "start"), self._number(query, "end")
                return self._send(200, self.review.clip(stem, start, end), "audio/wav")
        except DecisionError as exc:
            return self._refuse(exc.status, str(exc))
        except MediaError as exc:
            return self._refuse(400, str(exc))
        except OSError as exc:
            return self._refuse(500, f"{exc.filename or ''}: {exc.strerror or exc}")
        except (RuntimeError, ValueError) as exc:  # soundfile: a file that stopped decoding
            return self._refuse(500, f"{exc.__class__.__name__}: {exc}")
        return self._refuse(404, "no such page")

    def do_POST(self):
        path, query = self._parse()
        if query is None:
            return self._refuse(400, "malformed query string")
        if not self._allowed(query):
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._refuse(411, "a body with Content-Length is required")
        if length < 0 or length > MAX_BODY_BYTES:
            return self._refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw.decode("utf-8"))
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return self._refuse(400, f"body is not a JSON object ({exc.__class__.__name__})")
        folder = self.review.folder
        try:
            stem = body.get("file")
            if not isinstance(stem, str):
                raise DecisionError("file must be a name from /api/files")
            if path == "/api/decision":
                expect = body.get("expect")
                result = folder.decide(stem, str(body.get("action")), body.get("event"),
                                       onset=body.get("onset"), offset=body.get("offset"),
                                       label=body.get("label"),
                                       expect=expect if isinstance(expect, dict) else None)
            elif path == "/api/undo":
                result = folder.undo(stem)
            else:
                return self._refuse(404, "no such action")
            return self._json({"result": result,
                               "file": self.review.file_view(stem, with_scores=False)})
        except DecisionError as exc:
            return self._refuse(exc.status, str(exc))
        except OSError as exc:
            return self._refuse(507 if exc.errno == 28 else 500,
                                f"not saved: {exc.filename or ''}: {exc.strerror or exc}")
