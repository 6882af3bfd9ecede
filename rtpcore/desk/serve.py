"""`rtphelper serve`: outputs of local sessions to browsers (signed GET links) and SIP pcaps in from laptops (signed PUT)."""
from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from rtpcore.desk.links import (
    FILES_ROUTE, METHOD_FOLDER, METHOD_GET, METHOD_PUT, OUTPUT_SUBDIRS, REPORT_ROUTE, UPLOAD_ROUTE, UPLOADS_DIR, unsafe_relative,
    verify,
)
from rtpcore.errors import ConfigError, InputError
from rtpcore.fsutil import new_temp

log = logging.getLogger(__name__)

COPY_BLOCK = 1024 * 1024
REQUEST_TIMEOUT_S = 30.0  # a client that stops sending or reading is dropped after this
PCAP_TYPE = "application/vnd.tcpdump.pcap"
# What report.html and its parts open as in the browser (the rest downloads); the page has no script and needs none.
INLINE_TYPES = {".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".wav": "audio/wav",
                ".md": "text/markdown; charset=utf-8", ".json": "application/json"}
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; media-src 'self'"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What the server needs: the root it serves below, the HMAC secret, the largest upload."""

    root: Path
    secret: str
    max_upload_bytes: int


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' → (host, port); ConfigError names RTPHELPER_SERVE_ADDRESS."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ConfigError(f"RTPHELPER_SERVE_ADDRESS={address!r}: use host:port, e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


class _Handler(BaseHTTPRequestHandler):
    """GET /files/<path> for outputs, PUT /upload/<…>/uploads/<name> for SIP pcaps; both need a valid token."""

    server: _Server
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        """Never log the query string nor a report link's token segment: they open files."""
        path = urlsplit(self.path).path
        if path.startswith(REPORT_ROUTE):
            expires, _, rest = path[len(REPORT_ROUTE):].partition("/")
            path = f"{REPORT_ROUTE}{expires}/(token)/{rest.partition('/')[2]}"
        log.info("serve %s %s %s", self.command, path, args[1] if len(args) > 1 else "")

    def _target(self, route: str, method: str) -> tuple[str, Path] | None:
        split = urlsplit(self.path)
        if not split.path.startswith(route):
            self._fail(HTTPStatus.NOT_FOUND, f"no such route; files are under {FILES_ROUTE}")
            return None
        relative = unquote(split.path[len(route):]).strip("/")
        if unsafe_relative(relative):
            self._fail(HTTPStatus.BAD_REQUEST, "not a file path below the capture root")
            return None
        query = parse_qs(split.query)
        why = verify(self.server.config.secret, method, relative, (query.get("expires") or [""])[0],
                     (query.get("token") or [""])[0])
        if why:
            self._fail(HTTPStatus.FORBIDDEN, why)
            return None
        path = (self.server.config.root / relative).resolve()
        if not path.is_relative_to(self.server.config.root):
            self._fail(HTTPStatus.FORBIDDEN, "the path leaves the capture root")
            return None
        return relative, path

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if urlsplit(self.path).path.startswith(REPORT_ROUTE):
            self._report_file()
            return
        target = self._target(FILES_ROUTE, METHOD_GET)
        if target is None:
            return
        relative, path = target
        if relative.count("/") < 1 or relative.split("/")[-2] not in OUTPUT_SUBDIRS:
            self._fail(HTTPStatus.FORBIDDEN, f"only outputs ({', '.join(OUTPUT_SUBDIRS)}/) are served")
            return
        self._send_file(relative, path, inline=False)

    def _report_file(self) -> None:
        """GET /report/<expires>/<token>/<…>/combined/<file>: report.html and what it links to, one token for the folder."""
        head, _, rest = unquote(urlsplit(self.path).path[len(REPORT_ROUTE):]).partition("/")
        token, _, relative = rest.partition("/")
        folder, marker, inside = relative.partition(f"/{OUTPUT_SUBDIRS[0]}/")
        if not marker or not inside or unsafe_relative(relative):
            self._fail(HTTPStatus.BAD_REQUEST, "not a file of a session's combined/ folder")
            return
        combined = f"{folder}/{OUTPUT_SUBDIRS[0]}"
        why = verify(self.server.config.secret, METHOD_FOLDER, combined, head, token)
        if why:
            self._fail(HTTPStatus.FORBIDDEN, why)
            return
        base = (self.server.config.root / combined).resolve()
        path = (base / inside).resolve()
        if not base.is_relative_to(self.server.config.root) or not path.is_relative_to(base):
            self._fail(HTTPStatus.FORBIDDEN, "the path leaves the session's combined/ folder")
            return
        self._send_file(relative, path, inline=True)

    def _send_file(self, relative: str, path: Path, *, inline: bool) -> None:
        if not path.is_file():
            self._fail(HTTPStatus.NOT_FOUND, f"{relative}: no such output (was the session moved or deleted?)")
            return
        size = path.stat().st_size
        shown = INLINE_TYPES.get(path.suffix) if inline else None
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", shown or (PCAP_TYPE if path.suffix in (".pcap", ".pcapng")
                                                    else "application/octet-stream"))
        self.send_header("Content-Length", str(size))
        if shown:
            self.send_header("Content-Security-Policy", REPORT_CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
        else:
            self.send_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.end_headers()
        with path.open("rb") as src:
            shutil.copyfileobj(src, self.wfile, COPY_BLOCK)

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        target = self._target(UPLOAD_ROUTE, METHOD_PUT)
        if target is None:
            return
        relative, path = target
        if path.parent.name != UPLOADS_DIR:
            self._fail(HTTPStatus.FORBIDDEN, f"uploads go only into a session's {UPLOADS_DIR}/ folder")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self._fail(HTTPStatus.LENGTH_REQUIRED, "send Content-Length")
            return
        if int(length) > self.server.config.max_upload_bytes:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f"{int(length)} bytes is more than RTPHELPER_FETCH_MAX_BYTES ({self.server.config.max_upload_bytes})")
            return
        try:
            self._receive(path, int(length))
        except InputError as exc:
            self._fail(HTTPStatus.CONFLICT, str(exc).replace(str(self.server.config.root), "<capture root>"))
            return
        self._reply(HTTPStatus.CREATED, {"path": str(path), "bytes": int(length)})

    def _receive(self, path: Path, length: int) -> None:
        """Staged in a temp file, then hard-linked into place: an existing file is never replaced (an equal one is kept)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = new_temp(path.parent, path.name)
        try:
            with staged.open("wb") as out:
                left = length
                while left:
                    block = self.rfile.read(min(COPY_BLOCK, left))
                    if not block:
                        raise InputError(f"{path.name}: the upload ended after {length - left} of {length} bytes")
                    out.write(block)
                    left -= len(block)
            try:
                os.link(staged, path)
            except FileExistsError:
                if not filecmp.cmp(staged, path, shallow=False):
                    raise InputError(f"{path.parent.name}/{path.name} already exists with other content; "
                                     "rename your file and upload again") from None
        finally:
            staged.unlink(missing_ok=True)

    def _fail(self, status: HTTPStatus, why: str) -> None:
        self.close_connection = True  # an unread request body must not be parsed as the next request
        self._reply(status, {"error": why})

    def _reply(self, status: HTTPStatus, doc: dict[str, object]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: ServeConfig) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.config = config


class OutputServer:
    """The running server (a background thread); `url` is where it listens."""

    def __init__(self, address: str, config: ServeConfig) -> None:
        if not config.secret:
            raise ConfigError("RTPHELPER_SERVE_SECRET is not set: rtphelper serve refuses to run without a secret")
        host, port = parse_address(address)
        root = Path(config.root).resolve()
        if not root.is_dir():
            raise InputError(f"{root}: the capture root does not exist; set RTPHELPER_CAPTURE_ROOT")
        self._server = _Server((host, port), ServeConfig(root, config.secret, config.max_upload_bytes))
        self._thread = threading.Thread(target=self._server.serve_forever, name="rtphelper-serve", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}"

    def start(self) -> OutputServer:
        self._thread.start()
        return self

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
