"""``pixvcs serve``: bare repositories over HTTP, for pixvcs, stock git and git-lfs.

One WSGI application serves every bare pixvcs repository under a root
directory: ``ROOT/NAME`` at ``/NAME`` and at ``/NAME.git`` (and ``ROOT/NAME.git``
at both as well). Per repository:

- git smart HTTP (``/info/refs``, ``/git-upload-pack``, ``/git-receive-pack``)
  through dulwich's implementation (:mod:`dulwich.web`, :mod:`dulwich.server`),
  with one change: a ref update is checked before the ref moves — its commits'
  images must all be in this repository's media store
  (:func:`pixvcs.transfer.check_incoming`), and the ref must still be at the
  value the client saw, under the repository lock (compare-and-swap);
- the git-lfs Batch API (basic transfer, with the verify action) at
  ``/NAME.git/info/lfs/objects/batch`` and ``/NAME/info/lfs/objects/batch``, and
  the object endpoints it hands out: ``GET`` (download), ``PUT`` (upload) and
  ``POST .../verify`` under ``.../info/lfs/objects/<oid>``.

A repository's media are on disk (``lfs/objects``) or, when its config has a
``[media]`` section (or the server a default ``media``), in an S3-compatible
bucket (:mod:`pixvcs.s3media`): then the Batch API hands out presigned S3 URLs,
the verify action checks (hashes) what was uploaded before it counts as
stored, and ref updates ask the bucket which images it holds.

Auth (optional): a token file of ``TOKEN read`` / ``TOKEN write`` lines; the
token comes as ``Authorization: Bearer TOKEN`` or as the password of HTTP basic
auth. No or unknown token: 401 with ``WWW-Authenticate: Basic``; a read token on
a write: 403.

Nothing from a request is trusted: repository names are single safe path
segments, oids are 64 lowercase hex digits before they name a file, JSON bodies
are size-limited, uploads are streamed to a temporary file, size-limited, hashed
and stored only if they hash to their oid.

This module is the HTTP layer: it prints nothing (wsgiref's request log is
silenced) and reads no environment variable; ``pixvcs serve`` (cli_serve.py)
runs it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import socket
import socketserver
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from . import fsutil, multi
from .errors import CorruptObject, LockTimeout, PixvcsError, UsageError
from .media import MediaStore
from .pointer import is_oid

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .s3media import MediaConfig, S3Media

LFS_JSON = "application/vnd.git-lfs+json"
#: Largest JSON request body (batch, verify) accepted.
MAX_JSON_BODY = 1 << 20
#: Most objects in one batch request (git-lfs sends 100).
MAX_BATCH_OBJECTS = 1000
#: Largest media object accepted by default (``make_app(max_object_size=...)``).
MAX_OBJECT_SIZE = 2 << 30
CHUNK = 1 << 20
SCOPES = ("read", "write")
REALM = 'Basic realm="pixvcs"'

_NAME_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_LFS = re.compile(r"/(?P<repo>.+?)/info/lfs/(?P<rest>.*)\Z")
_OBJECT = re.compile(r"objects/(?P<oid>[^/]+)(?P<verify>/verify)?\Z")


# -- tokens -------------------------------------------------------------------------------
def parse_auth_file(path: str) -> dict[str, str]:
    """Read a token file: one ``TOKEN SCOPE`` per line (SCOPE ``read`` or ``write``);
    blank lines and ``#`` comments are allowed. Returns token -> scope."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the auth file {path}: {e}") from None
    tokens: dict[str, str] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in SCOPES:
            raise UsageError(
                f"{path} line {n}: expected 'TOKEN read' or 'TOKEN write', got {raw.strip()!r}"
            )
        token, scope = parts
        if token in tokens:
            raise UsageError(f"{path} line {n}: the token appears twice")
        tokens[token] = scope
    if not tokens:
        raise UsageError(f"{path}: no tokens (lines of 'TOKEN read' or 'TOKEN write')")
    return tokens


def token_from_header(value: str) -> str | None:
    """The token an ``Authorization`` header carries (Bearer, or basic auth's password;
    a basic username with an empty password is taken as the token too)."""
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer":
        return rest or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):  # malformed: no token
            return None
        user, _, password = decoded.partition(":")
        return password or user or None
    return None


# -- responses ------------------------------------------------------------------------------
class HTTPError(Exception):
    """A request that ends with an error status (carried to the client as JSON)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _status(code: int) -> str:
    return f"{code} {_REASONS.get(code, 'Error')}"


def _json(
    start_response: StartResponse,
    code: int,
    data: Any,
    headers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(
        _status(code),
        [("Content-Type", LFS_JSON), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


# -- repositories ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Served:
    """One repository a request names: its directory and the URL prefix used."""

    path: str
    prefix: str  # as the client spelled it, e.g. "/animals" or "/animals.git"

    @property
    def media(self) -> MediaStore:
        return MediaStore(os.path.join(self.path, "lfs"))


def resolve(root: str, prefix: str) -> str | None:
    """The bare repository under ``root`` that the URL prefix ``/NAME`` or
    ``/NAME.git`` names (nested names: every segment checked), or None."""
    segments = prefix.strip("/").split("/")
    if not segments or any(not _NAME_SEGMENT.match(s) for s in segments):
        return None
    name = "/".join(segments)
    candidates = [name, name[: -len(".git")]] if name.endswith(".git") else [name, name + ".git"]
    for candidate in candidates:
        if not candidate or candidate.endswith("/"):
            continue
        path = os.path.join(root, *candidate.split("/"))
        if _is_pixvcs_bare(path):
            return path
    return None


def repositories(root: str, *, max_depth: int = 3) -> list[str]:
    """Names (URL paths without the leading ``/``) of the repositories under
    ``root`` that :func:`resolve` serves, to at most ``max_depth`` levels."""
    found: list[str] = []

    def walk(directory: str, prefix: str, depth: int) -> None:
        try:
            entries = sorted(e.name for e in os.scandir(directory) if e.is_dir())
        except OSError:  # unreadable: nothing to list there
            return
        for name in entries:
            if not _NAME_SEGMENT.match(name):
                continue
            path = os.path.join(directory, name)
            if _is_pixvcs_bare(path):
                found.append(prefix + name)
            elif depth > 1:
                walk(path, f"{prefix}{name}/", depth - 1)

    walk(root, "", max_depth)
    return found


def _is_pixvcs_bare(path: str) -> bool:
    import configparser

    if not (
        os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects"))
    ):
        return False
    config = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        config.read(os.path.join(path, "config"), encoding="utf-8")
    except configparser.Error:  # unreadable config: not something we serve
        return False
    return config.has_option("pixvcs", "formatversion")


# -- the application ------------------------------------------------------------------------
class PixvcsApp:
    """The WSGI application. ``tokens`` None means no auth (every request may write)."""

    def __init__(
        self,
        root: str,
        tokens: dict[str, str] | None = None,
        *,
        max_object_size: int = MAX_OBJECT_SIZE,
        media: MediaConfig | None = None,
    ) -> None:
        from .s3media import ClientPool

        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise UsageError(f"{root} is not a directory")
        self.tokens = tokens
        self.max_object_size = max_object_size
        self.media = media  # the S3 default for repositories whose config names none
        self._clients = ClientPool()

    def s3_for(self, path: str) -> S3Media | None:
        """Where a served repository's media live: S3 (its config's ``[media]``,
        else the server's default under ``PREFIX/NAME/``), or None: on disk."""
        from .s3media import S3Media, read_config

        media = read_config(path)
        if media is None and self.media is not None:
            media = self.media.child(os.path.relpath(path, self.root).replace(os.sep, "/"))
        return S3Media(media, self._clients.get(media)) if media is not None else None

    # entry point
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            scope = self._scope(environ)
            lfs = _LFS.match(environ.get("PATH_INFO", ""))
            if lfs:
                return self._lfs(environ, start_response, scope, lfs["repo"], lfs["rest"])
            self._require(scope, "write" if _is_git_write(environ) else "read")
            return _git_request(self.root, environ, start_response, self.s3_for)
        except HTTPError as e:
            headers = [("WWW-Authenticate", REALM)] if e.status == 401 else []
            return _json(start_response, e.status, {"message": e.message}, headers)
        except PixvcsError as e:  # a repository that cannot be used: say why, keep serving
            return _json(start_response, 500, {"message": str(e)})

    # auth
    def _scope(self, environ: WSGIEnvironment) -> str | None:
        if self.tokens is None:
            return "write"
        token = token_from_header(environ.get("HTTP_AUTHORIZATION", ""))
        if token is None:
            return None
        found = None
        for known, scope in self.tokens.items():
            # compare every token in constant time: no timing hint of a near miss
            if hmac.compare_digest(known.encode(), token.encode()):
                found = scope
        return found

    @staticmethod
    def _require(scope: str | None, needed: str) -> None:
        if scope is None:
            raise HTTPError(401, "authentication required: send a token (Bearer or basic auth)")
        if needed == "write" and scope != "write":
            raise HTTPError(403, "this token may only read")

    # LFS
    def _lfs(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        scope: str | None,
        prefix: str,
        rest: str,
    ) -> Iterable[bytes]:
        self._require(scope, "read")
        path = resolve(self.root, prefix)
        if path is None:
            raise HTTPError(404, "no such repository")
        served = Served(path, "/" + prefix.strip("/"))
        method = environ["REQUEST_METHOD"]
        if rest == "objects/batch":
            if method != "POST":
                raise HTTPError(405, "use POST")
            return self._batch(environ, start_response, scope, served)
        if rest in ("objects/multi/upload", "objects/multi/download"):
            if method != "POST":
                raise HTTPError(405, "use POST")
            if rest.endswith("upload"):
                self._require(scope, "write")
            if self.s3_for(path) is not None:
                raise HTTPError(409, "this repository's media are in S3: use the basic transfer")
            return self._multi(environ, start_response, served, rest.endswith("upload"))
        obj = _OBJECT.match(rest)
        if obj is None:
            raise HTTPError(404, "not an LFS endpoint of pixvcs")
        oid = obj["oid"]
        if not is_oid(oid):  # before the oid names any file
            raise HTTPError(422, f"invalid oid {oid[:80]!r}: expected 64 lowercase hex digits")
        if obj["verify"]:
            if method != "POST":
                raise HTTPError(405, "use POST")
            return self._verify(environ, start_response, served, oid)
        if method in ("GET", "PUT") and self.s3_for(path) is not None:
            raise HTTPError(409, "this repository's media are in S3: use the Batch API's hrefs")
        if method == "GET":
            return self._download(start_response, served, oid)
        if method == "PUT":
            self._require(scope, "write")
            return self._upload(environ, start_response, served, oid)
        raise HTTPError(405, "use GET or PUT")

    def _batch(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        scope: str | None,
        served: Served,
    ) -> list[bytes]:
        request = _read_json(environ)
        if not isinstance(request, dict):
            raise HTTPError(422, "the batch request must be a JSON object")
        operation = request.get("operation")
        if operation not in ("download", "upload"):
            raise HTTPError(422, "operation must be 'download' or 'upload'")
        if operation == "upload":
            self._require(scope, "write")
        offered = request.get("transfers", ["basic"])
        if not isinstance(offered, list):
            raise HTTPError(422, "transfers must be a list of names")
        transfers = {t for t in offered if isinstance(t, str)}
        if not {"basic", multi.NAME} & transfers:
            raise HTTPError(422, f"supported transfer adapters: 'basic', '{multi.NAME}'")
        if request.get("hash_algo", "sha256") != "sha256":
            raise HTTPError(409, "only sha256 objects are supported")
        objects = request.get("objects")
        if not isinstance(objects, list):
            raise HTTPError(422, "objects must be a list")
        if len(objects) > MAX_BATCH_OBJECTS:
            raise HTTPError(413, f"at most {MAX_BATCH_OBJECTS} objects per batch")
        base = _base_url(environ) + served.prefix + "/info/lfs/objects/"
        header = {}
        if environ.get("HTTP_AUTHORIZATION"):
            # the object URLs are on this server: they take the credentials the batch took
            header["Authorization"] = environ["HTTP_AUTHORIZATION"]
        answers: list[dict[str, Any] | tuple[str, int]] = [_batch_item(obj) for obj in objects]
        valid = [a for a in answers if isinstance(a, tuple)]
        s3 = self.s3_for(served.path)
        transfer = "basic"
        if s3 is None and multi.NAME in transfers:
            transfer = multi.NAME  # one href for the whole batch (media on disk only)
        elif "basic" not in transfers:
            raise HTTPError(422, "media in S3 move by the 'basic' transfer only")
        if s3 is not None:
            from .s3media import batch_objects

            def verify_href(oid: str, nonce: str | None) -> str:
                return f"{base}{oid}/verify" + (f"?upload={nonce}" if nonce else "")

            found = iter(
                batch_objects(s3, operation, valid, verify_href, header, self.max_object_size)
            )
        else:
            media = served.media
            shared = f"{base}multi/{operation}" if transfer == multi.NAME else None
            found = iter(
                self._batch_object(o, s, operation, media, base, header, shared) for o, s in valid
            )
        out = [next(found) if isinstance(a, tuple) else a for a in answers]
        return _json(
            start_response, 200, {"transfer": transfer, "objects": out, "hash_algo": "sha256"}
        )

    def _batch_object(
        self,
        oid: str,
        size: int,
        operation: str,
        media: MediaStore,
        base: str,
        header: dict[str, str],
        shared: str | None = None,
    ) -> dict[str, Any]:
        """One object's answer; ``shared``: the pixvcs-multi href of the batch."""
        if operation == "download":
            try:  # one stat: whether it is there, and its size
                stored = media.size(oid)
            except FileNotFoundError:
                return {
                    "oid": oid,
                    "size": size,
                    "error": {"code": 404, "message": "object not found"},
                }
            # the stored size: a client may not know it (sizes are checked by the hash anyway)
            return {
                "oid": oid,
                "size": stored,
                "authenticated": True,
                "actions": {"download": {"href": shared or base + oid, "header": dict(header)}},
            }
        if size > self.max_object_size:
            message = f"larger than this server accepts ({self.max_object_size} bytes)"
            return {"oid": oid, "size": size, "error": {"code": 422, "message": message}}
        if media.has(oid):
            return {"oid": oid, "size": size}  # nothing to do
        # no verify action: the PUT hashes the bytes and makes them durable
        # before it answers 200, so a verify call would only repeat a stat
        upload = {"href": shared or f"{base}{oid}?size={size}", "header": dict(header)}
        return {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload}}

    def _multi(
        self, environ: WSGIEnvironment, start_response: StartResponse, served: Served, up: bool
    ) -> Iterable[bytes]:
        """The pixvcs-multi transfer's two requests (see :mod:`pixvcs.multi`)."""
        try:
            if up:
                length = _content_length(environ)
                if length is None:
                    raise HTTPError(411, "an upload needs a Content-Length")
                result = multi.serve_upload(
                    environ["wsgi.input"],
                    length,
                    served.media,
                    max_size=self.max_object_size,
                    max_records=MAX_BATCH_OBJECTS,
                )
                return _json(start_response, 200, result)
            oids = multi.parse_download_request(_read_json(environ), MAX_BATCH_OBJECTS)
            length, body = multi.download_stream(served.media, oids)
        except multi.StreamError as e:
            raise HTTPError(e.status, e.message) from None
        start_response(
            _status(200), [("Content-Type", multi.CONTENT_TYPE), ("Content-Length", str(length))]
        )
        return body

    def _download(self, start_response: StartResponse, served: Served, oid: str) -> list[bytes]:
        try:
            data = served.media.read(oid)  # verified: corrupt bytes are never sent
        except FileNotFoundError:
            raise HTTPError(404, "object not found") from None
        except CorruptObject:
            raise HTTPError(
                500, f"object {oid} is corrupt on the server (run pixvcs fsck)"
            ) from None
        start_response(
            _status(200),
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))],
        )
        return [data]

    def _upload(
        self, environ: WSGIEnvironment, start_response: StartResponse, served: Served, oid: str
    ) -> list[bytes]:
        length = _content_length(environ)
        if length is None:
            raise HTTPError(411, "an upload needs a Content-Length")
        declared = parse_qs(environ.get("QUERY_STRING", "")).get("size", [None])[0]
        if declared is not None:
            if not declared.isdigit() or int(declared) != length:
                raise HTTPError(422, "the body's length is not the object's size")
        if length > self.max_object_size:
            raise HTTPError(413, f"larger than this server accepts ({self.max_object_size} bytes)")
        media = served.media
        if media.has(oid):
            _drain(environ["wsgi.input"], length)
            return _json(start_response, 200, {})
        os.makedirs(media.tmp_dir, exist_ok=True)
        tmp = fsutil.unique_tmp(media.tmp_dir, "upload-")
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:
                left = length
                stream = environ["wsgi.input"]
                while left:
                    chunk = stream.read(min(CHUNK, left))
                    if not chunk:
                        raise HTTPError(400, "the body ended before its Content-Length")
                    digest.update(chunk)
                    f.write(chunk)
                    left -= len(chunk)
                f.flush()
                got = digest.hexdigest()
                if got != oid:
                    raise HTTPError(422, f"the bytes hash to {got}, not to {oid}: not stored")
                os.fsync(f.fileno())
            media.publish(tmp, oid)
        except BaseException:
            # the temp file is ours alone; whatever went wrong, it goes
            with suppress(FileNotFoundError):  # never created, or already renamed
                os.unlink(tmp)
            raise
        media.sync()  # the rename is durable before the client is told
        return _json(start_response, 200, {})

    def _verify(
        self, environ: WSGIEnvironment, start_response: StartResponse, served: Served, oid: str
    ) -> list[bytes]:
        body = _read_json(environ)
        size = body.get("size") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("oid") != oid:
            raise HTTPError(422, "the verify request must name the object's oid")
        s3 = self.s3_for(served.path)
        if s3 is not None:
            from .s3media import is_nonce

            nonce = parse_qs(environ.get("QUERY_STRING", "")).get("upload", [None])[0]
            if nonce is not None and not is_nonce(nonce):
                raise HTTPError(422, "invalid upload id")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise HTTPError(422, "the verify request must give the object's size")
            if size > self.max_object_size:
                raise HTTPError(
                    413, f"larger than this server accepts ({self.max_object_size} bytes)"
                )
            problem = s3.accept_upload(oid, size, nonce)
            if problem is not None:
                raise HTTPError(404 if problem[0] == "missing" else 422, problem[1])
            return _json(start_response, 200, {})
        media = served.media
        if not media.has(oid):
            raise HTTPError(404, "object not found")
        if size != media.size(oid):
            raise HTTPError(422, "the stored object has another size")
        return _json(start_response, 200, {})


def _batch_item(obj: Any) -> dict[str, Any] | tuple[str, int]:
    """A batch request's object: ``(oid, size)`` when valid, else its error answer."""
    oid = obj.get("oid") if isinstance(obj, dict) else None
    size = obj.get("size") if isinstance(obj, dict) else None
    shown_oid = oid if isinstance(oid, str) and len(oid) <= 128 else ""
    if not isinstance(oid, str) or not is_oid(oid):
        return {"oid": shown_oid, "size": 0, "error": {"code": 422, "message": "invalid oid"}}
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return {"oid": oid, "size": 0, "error": {"code": 422, "message": "invalid size"}}
    return oid, size


def _content_length(environ: WSGIEnvironment) -> int | None:
    raw = environ.get("CONTENT_LENGTH") or ""
    if not raw.strip().isdigit():
        return None
    return int(raw)


def _drain(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)


def _read_json(environ: WSGIEnvironment) -> Any:
    length = _content_length(environ)
    if length is None:
        raise HTTPError(411, "a JSON request needs a Content-Length")
    if length > MAX_JSON_BODY:
        raise HTTPError(413, f"request body larger than {MAX_JSON_BODY} bytes")
    data = environ["wsgi.input"].read(length)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "the request body is not JSON") from None


def _base_url(environ: WSGIEnvironment) -> str:
    """This server's URL as the client reached it (behind a proxy, the WSGI
    server must set ``wsgi.url_scheme`` and ``HTTP_HOST`` from what it trusts)."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ["SERVER_NAME"]
        port = environ.get("SERVER_PORT", "")
        if port and port != ("443" if scheme == "https" else "80"):
            host += f":{port}"
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '').rstrip('/')}"


def _is_git_write(environ: WSGIEnvironment) -> bool:
    path: str = environ.get("PATH_INFO", "")
    if path.endswith("/git-receive-pack"):
        return True
    if path.endswith("/info/refs"):
        service: str = parse_qs(environ.get("QUERY_STRING", "")).get("service", [""])[0]
        return service == "git-receive-pack"
    return False


# -- git smart HTTP (dulwich) ---------------------------------------------------------------
def _git_request(
    root: str,
    environ: WSGIEnvironment,
    start_response: StartResponse,
    s3_for: Callable[[str], S3Media | None],
) -> Iterator[bytes]:
    """One git smart-HTTP request, answered by dulwich; the repositories it
    opened are closed when the response is done."""
    from dulwich.server import DEFAULT_HANDLERS, Backend
    from dulwich.web import make_wsgi_chain

    from .packs import guard_bitmaps

    opened: list[Any] = []

    class _Backend(Backend):
        def open_repository(self, path: str) -> Any:
            from dulwich.errors import NotGitRepository
            from dulwich.repo import Repo as GitRepo

            found = resolve(root, os.fsdecode(path))
            if found is None:
                raise NotGitRepository(f"no repository at {path}")
            repo = GitRepo(found, bare=True)
            opened.append(repo)
            guard_bitmaps(repo.object_store)
            return repo

    handlers: dict[bytes, Callable[..., Any]] = dict(DEFAULT_HANDLERS)
    handlers[b"git-upload-pack"] = _upload_pack_handler()
    handlers[b"git-receive-pack"] = _receive_pack_handler(root, s3_for)
    try:
        yield from make_wsgi_chain(_Backend(), handlers=handlers)(environ, start_response)
    finally:
        for repo in opened:
            repo.close()


#: Pack bytes an upload-pack response gathers before it frames them (four
#: full side-band packets).
PACK_WRITE_BUFFER = 4 * 65515


def _upload_pack_handler() -> Callable[..., Any]:
    from dulwich.protocol import CAPABILITY_NO_DONE
    from dulwich.server import UploadPackHandler

    class PixvcsUploadPack(UploadPackHandler):
        """dulwich's upload-pack, its pack data gathered into full side-band
        packets. dulwich frames every chunk it generates (an object header, a
        130-byte pointer blob) as its own packet and socket write: 20,000
        images made some 60,000 writes on the server and as many reads on
        the client. The bytes and their order are unchanged."""

        def _start_pack_send_phase(self) -> None:
            super()._start_pack_send_phase()
            send = self.write_pack_data
            if getattr(send, "func", None) != self.proto.write_sideband:
                return  # no side-band: dulwich writes the pack raw, leave it
            buf = bytearray()

            def flush() -> None:
                if buf:
                    send(bytes(buf))
                    buf.clear()

            def write(data: bytes) -> None:
                buf.extend(data)
                if len(buf) >= PACK_WRITE_BUFFER:
                    flush()

            write_pkt_line = self.proto.write_pkt_line

            def pkt_line(line: bytes | None) -> None:
                if line is None:  # the flush-pkt that ends the response: pack data first
                    flush()
                write_pkt_line(line)

            self.write_pack_data = write
            self.proto.write_pkt_line = pkt_line  # type: ignore[method-assign]

        def handle(self) -> None:
            """dulwich's negotiation, then a pack that reuses each stored
            object's compressed bytes (:mod:`pixvcs.packreuse`): dulwich's
            writer reads every object twice and compresses it again, which for
            20,000 pointer blobs was most of a clone's history fetch. A partial
            clone filter is left to dulwich."""
            from dulwich.pack import write_pack_data
            from dulwich.server import _ProtocolGraphWalker

            from .packreuse import reused_objects

            if self.filter_spec is not None:
                super().handle()
                return
            self._processing_have_lines = True
            store = self.repo.object_store
            walker = _ProtocolGraphWalker(
                self, store, self.repo.get_peeled, self.repo.refs.get_symrefs
            )
            wants: list[Any] = []

            def determine_wants(refs: Any, depth: int | None = None) -> list[Any]:
                wants.extend(walker.determine_wants(refs, depth))
                return wants

            missing = self.repo.find_missing_objects(
                determine_wants, walker, self.progress, get_tagged=self.get_tagged
            )
            if not wants or missing is None:
                return  # nothing wanted (e.g. a stateless negotiation step)
            ids = [oid for oid, _hint in missing]
            no_done = self.has_capability(CAPABILITY_NO_DONE)
            if not walker.handle_done(not no_done, self._done_received):
                return
            self._start_pack_send_phase()
            self.progress(f"counting objects: {len(ids)}, done.\n".encode("ascii"))
            fmt = self.repo.object_format
            write_pack_data(
                self.write_pack_data,
                reused_objects(store, ids, fmt),
                num_records=len(ids),
                object_format=fmt,
            )
            self.proto.write_pkt_line(None)

    return PixvcsUploadPack


def _receive_pack_handler(root: str, s3_for: Callable[[str], S3Media | None]) -> Callable[..., Any]:
    from dulwich.objects import ObjectID
    from dulwich.refs import Ref
    from dulwich.server import ReceivePackHandler

    zero = ObjectID(b"0" * 40)

    class PixvcsReceivePack(ReceivePackHandler):
        """dulwich's receive-pack, checking every ref update before the ref moves.

        dulwich applies the pack first, then calls ``_on_update`` for each ref
        and (when it returns no error) moves the ref with ``set_if_equals``,
        whose result it does not look at. So the checks live in ``_on_update``,
        under the repository lock (taken at the first ref, released when every
        ref is done): the ref must still be at the client's old value (a race
        lost gives "fetch first"), and every image its new commits bring must
        be in the media store."""

        def __init__(self, backend: Any, args: Sequence[Any], proto: Any, **kw: Any) -> None:
            super().__init__(backend, args, proto, **kw)
            prefix = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            self._path = resolve(root, prefix)
            self._stack: ExitStack | None = None
            self._pixrepo: Any = None
            #: Pointer blobs of the pushed pack (blob id -> bytes), for the ref check.
            self._pointers: dict[str, bytes] = {}

        def _on_pre_receive(self, client_refs: Any) -> None:
            # dulwich runs pre-receive before the pack arrives; the check that
            # git's pre-receive hook makes is made in _on_update instead
            return None

        def _apply_pack(self, refs: Any) -> Iterator[tuple[bytes, bytes]]:
            with ExitStack() as stack:
                self._stack = stack
                store: Any = self.repo.object_store  # this request's: opened for it
                store.add_thin_pack = partial(self._add_pack, store, store.add_thin_pack)
                try:
                    yield from super()._apply_pack(refs)
                finally:
                    if self._pixrepo is not None:
                        self._pixrepo.close()
                        self._pixrepo = None
                    self._stack = None

        def _add_pack(
            self,
            store: Any,
            dulwich_add: Callable[..., Any],
            read_all: Callable[[int], bytes],
            read_some: Callable[[int], bytes] | None,
            progress: Callable[..., None] | None = None,
            *,
            max_input_size: int | None = None,
        ) -> None:
            """The pushed pack (the rest of the request body) into a temp file
            of the pack directory, indexed in one pass by
            :mod:`pixvcs.packingest`, the pointer blobs it carries kept for the
            ref check; a pack with a delta in it (stock git sends thin packs)
            is indexed by dulwich as before."""
            from dulwich.errors import ObjectFormatException

            from .packingest import MalformedPack, add_pack_stream

            read = read_some or read_all

            def copy(f: BinaryIO) -> None:
                total = 0
                while chunk := read(1 << 16):
                    total += len(chunk)
                    if max_input_size and total > max_input_size:
                        raise ObjectFormatException(
                            f"the pack is larger than receive.maxInputSize ({max_input_size} bytes)"
                        )
                    f.write(chunk)
                if not total:
                    raise ObjectFormatException("no pack data")

            try:
                pointers = add_pack_stream(
                    store,
                    "tmp-receive-",
                    copy,
                    lambda read: dulwich_add(read, None, progress, max_input_size=max_input_size),
                )
            except MalformedPack as e:
                raise ObjectFormatException(f"malformed pack: {e}") from None
            self._pointers.update(pointers)

        def _on_update(self, ref_name: Ref, old_sha: ObjectID, new_sha: ObjectID) -> bytes | None:
            try:
                problem = self._check(ref_name, old_sha, new_sha)
            except LockTimeout:
                problem = "the repository is busy (locked); try again"
            except PixvcsError as e:
                problem = str(e)
            if problem is not None:
                return problem.replace("\n", " ").encode("utf-8", "replace")
            result: bytes | None = super()._on_update(ref_name, old_sha, new_sha)
            return result

        def _check(self, ref: Ref, old: ObjectID, new: ObjectID) -> str | None:
            from .repo import Repo
            from .transfer import check_incoming, remember_pointers

            if self._path is None or self._stack is None:
                return "no such repository"
            if self._pixrepo is None:
                state = os.path.join(self._path, "pixvcs")
                os.makedirs(state, exist_ok=True)
                self._stack.enter_context(fsutil.repo_lock(os.path.join(state, "lock")))
                self._pixrepo = Repo(self._path, bare=True)
                remember_pointers(self._pixrepo, self._pointers)
            try:  # through the repository opened under the lock: no stale cache
                current: ObjectID | None = self._pixrepo.git.refs[ref]
            except KeyError:
                current = None
            expected = None if old == zero else old
            if current != expected:
                return "the branch moved on the server meanwhile (fetch first)"
            if new != zero:
                s3 = s3_for(self._path)  # media in S3: asked there (HEADs in parallel)
                problems = check_incoming(
                    self._pixrepo,
                    [(old.decode(), new.decode(), ref.decode())],
                    media_missing=s3.missing if s3 is not None else None,
                )
                if problems:
                    return "; ".join(problems)
            return _clear_stale_ref_lock(self._path, ref.decode())

    return PixvcsReceivePack


def _clear_stale_ref_lock(git_dir: str, ref: str) -> str | None:
    """The recovery of format.md, "The repository lock", for a ref about to move
    (dulwich does not survive a ``<ref>.lock`` of a killed process): the caller
    holds the repository lock, so a ref lock older than a few seconds is stale."""
    from .repo import STALE_REF_LOCK_SECONDS

    lock = os.path.join(git_dir, *ref.split("/")) + ".lock"
    for _attempt in range(20):
        try:
            age = time.time() - os.lstat(lock).st_mtime
        except FileNotFoundError:  # no ref lock: the usual case
            return None
        if age > STALE_REF_LOCK_SECONDS:
            with suppress(FileNotFoundError):  # removed meanwhile: as good
                os.unlink(lock)
            return None
        time.sleep(0.2)
    return f"{ref} is locked on the server; try again"


def make_app(
    root: str,
    auth_file: str | None = None,
    *,
    max_object_size: int = MAX_OBJECT_SIZE,
    media_url: str | None = None,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
) -> PixvcsApp:
    """The WSGI application, for a production WSGI server (see docs/serving.md):
    ``gunicorn 'pixvcs.server:make_app("/srv/datasets", "/etc/pixvcs/tokens")'``.
    ``media_url`` (``s3://BUCKET/PREFIX``): media of repositories whose config
    names no ``[media]`` go to ``PREFIX/NAME/`` in that bucket."""
    from .s3media import make_config

    tokens = parse_auth_file(auth_file) if auth_file else None
    media = None
    if media_url is not None:
        media = make_config(media_url, endpoint_url=s3_endpoint, region=s3_region)
    elif s3_endpoint is not None or s3_region is not None:
        raise UsageError("an S3 endpoint or region needs a media URL (s3://BUCKET/PREFIX)")
    return PixvcsApp(root, tokens, max_object_size=max_object_size, media=media)


# -- the embedded server ----------------------------------------------------------------------
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return None


class ThreadedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: with a client's 8 parallel
    # transfers the kernel drops SYNs, and each dropped one is retried after 1 s
    request_queue_size = max(128, socket.SOMAXCONN)


class ThreadedWSGIServer6(ThreadedWSGIServer):
    address_family = socket.AF_INET6


def make_server(
    app: WSGIApplication | PixvcsApp, host: str = "127.0.0.1", port: int = 0
) -> ThreadedWSGIServer:
    """The embedded server (wsgiref, a thread per request); ``port=0`` picks a free port."""
    cls = ThreadedWSGIServer6 if ":" in host else ThreadedWSGIServer
    server = cls((host, port), _QuietHandler)
    server.set_app(app)
    return server


def default_workers() -> int:
    """Worker processes of the embedded server by default: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def serve_in_processes(server: ThreadedWSGIServer, workers: int) -> None:
    """Serve until SIGINT or SIGTERM with ``workers`` processes sharing the
    listening socket (prefork, as a production WSGI server's workers): each
    accepts connections itself and answers them a thread per request. A
    pixvcs-multi transfer is per-object Python work that one process does one
    thread at a time, so one process used one core however many clients came.

    The parent only supervises: a worker that dies is replaced; SIGINT or
    SIGTERM stops every worker; a worker whose parent dies is stopped by the
    kernel (``PR_SET_PDEATHSIG``). With ``workers`` 1 the server runs in this
    process, as it does where the platform cannot fork."""
    import signal

    if workers <= 1 or not hasattr(os, "fork"):  # no fork (Windows): one process
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    parent = os.getpid()
    previous = signal.signal(signal.SIGTERM, stop)
    children: set[int] = set()
    try:
        while True:
            while len(children) < workers:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - a worker (its coverage is the tests' requests)
                    _worker(server, parent)
                children.add(pid)
            pid, _status = os.wait()
            children.discard(pid)  # died: replaced on the next turn
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for pid in children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _worker(server: ThreadedWSGIServer, parent: int) -> None:
    """A forked worker of :func:`serve_in_processes`: serves until a signal, then exits."""
    import signal

    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the terminal's Ctrl-C ends it quietly
        libc = fsutil._libc()
        if libc is not None:
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the parent's death ends it
        if os.getppid() != parent:  # the parent died before the call above
            os._exit(0)
        server.serve_forever()
    except BaseException:  # noqa: BLE001 - a worker never returns into the parent's code
        code = 1
    finally:
        os._exit(code)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
