"""Media in an S3-compatible bucket, for bare repositories and ``pixvcs serve``.

Where a bare repository's media live is part of its config (docs/format.md,
"Media in S3")::

    [media]
        url = s3://BUCKET/PREFIX
        endpoint-url = https://minio.example.org:9000   ; optional (default: AWS)
        region = eu-central-1                            ; optional
        verify = hash                                     ; or: checksum
        expires-in = 3600                                 ; presigned URL lifetime (s)

Credentials never live in a repository: boto3 finds them in its usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role).

Bucket layout under ``PREFIX/``: ``objects/<oid[0:2]>/<oid[2:4]>/<oid>`` (the
git-lfs fan-out, the exact bytes whose SHA-256 is the oid) and
``incoming/<oid>.<nonce>`` (uploads not verified yet, ``verify = hash`` only).

Integrity. With ``verify = hash`` (the default, for any S3-compatible store) a
client uploads to an ``incoming/`` key; the verify action makes the server hash
those bytes, and only bytes that hash to their oid are copied (copy conditional
on the ETag that was hashed) to ``objects/``; a bad upload is deleted. So a key
under ``objects/`` always holds verified bytes, and "is it there" is a HEAD or
a listing. With ``verify = checksum`` (stores that verify ``x-amz-checksum-sha256``
on upload, as AWS S3 does) the client uploads straight to ``objects/`` and the
store refuses bytes whose SHA-256 is not the signed checksum; verify checks the
size and the checksum the store reports (or hashes the object when it reports
none), and deletes a bad object. Every presigned PUT carries the checksum as a
signed header, in both modes. moto (the test server) verifies neither checksums
nor signatures, which is why ``hash`` is the default.

boto3 is optional (``pip install 'pixvcs[s3]'``); it is imported on first use.
Nothing here reads the environment itself (boto3 does, for credentials).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import multi
from .errors import CorruptObject, MissingDependency, MissingMedia, RemoteError, UsageError
from .pointer import is_oid

if TYPE_CHECKING:
    from .media import MediaStore

Progress = Callable[[str, int, int], None]

VERIFY_MODES = ("hash", "checksum")
DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 7 * 24 * 3600  # SigV4's limit
#: Parallel requests (HEAD, GET, PUT, LIST) per call.
WORKERS = 16
#: Above this many oids, existence is learnt by listing ``objects/<aa>/`` prefixes.
LIST_ABOVE = 1000
BATCH = 100
#: Largest object copied with one CopyObject (S3's limit); larger ones go multipart.
MAX_SINGLE_COPY = 5 << 30

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_NONCE = re.compile(r"[0-9a-f]{32}\Z")


# -- configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class MediaConfig:
    """Where media live in S3, and how uploads are verified (see the module docstring)."""

    bucket: str
    prefix: str = ""  # "" or "a/b/" (always ends with "/")
    endpoint_url: str | None = None
    region: str | None = None
    verify: str = "hash"
    expires_in: int = DEFAULT_EXPIRES_IN

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def child(self, name: str) -> MediaConfig:
        """The config for one repository ``name`` under a server-wide prefix."""
        return replace(self, prefix=f"{self.prefix}{name.strip('/')}/")


def parse_media_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix ending in ``/`` or "")."""
    if not url.startswith("s3://"):
        raise UsageError(f"media URL {url!r}: expected s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise UsageError(f"media URL {url!r}: {bucket!r} is not a valid S3 bucket name")
    parts = [p for p in prefix.split("/") if p]
    for part in parts:
        if not _SEGMENT.match(part):
            raise UsageError(
                f"media URL {url!r}: prefix segment {part!r} must match [A-Za-z0-9_][A-Za-z0-9._-]*"
            )
    return bucket, "".join(p + "/" for p in parts)


def make_config(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    verify: str = "hash",
    expires_in: int = DEFAULT_EXPIRES_IN,
) -> MediaConfig:
    """A validated :class:`MediaConfig` (UsageError naming the bad value)."""
    bucket, prefix = parse_media_url(url)
    if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
        raise UsageError(f"S3 endpoint {endpoint_url!r}: expected an http:// or https:// URL")
    if region is not None and not re.fullmatch(r"[a-z0-9-]{1,40}", region):
        raise UsageError(f"S3 region {region!r} is not a region name")
    if verify not in VERIFY_MODES:
        raise UsageError(f"media verify {verify!r}: expected one of {', '.join(VERIFY_MODES)}")
    if not 1 <= expires_in <= MAX_EXPIRES_IN:
        raise UsageError(f"media expires-in {expires_in}: expected 1..{MAX_EXPIRES_IN} seconds")
    endpoint = endpoint_url.rstrip("/") if endpoint_url else None
    return MediaConfig(bucket, prefix, endpoint, region, verify, expires_in)


_KEYS = ("url", "endpoint-url", "region", "verify", "expires-in")


def read_config(git_dir: str) -> MediaConfig | None:
    """The ``[media]`` section of a git directory's config, or None (media on disk)."""
    from dulwich.config import ConfigFile

    path = os.path.join(git_dir, "config")
    try:
        config = ConfigFile.from_path(path)
    except FileNotFoundError:  # no config: not a repository we configure
        return None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    section = (b"media",)
    if not config.has_section(section):
        return None
    values: dict[str, str] = {}
    for key, value in config.items(section):
        name = key.decode("utf-8", "replace").lower()
        if name not in _KEYS:
            raise UsageError(f"{path}: unknown key media.{name} (known: {', '.join(_KEYS)})")
        values[name] = value.decode("utf-8", "replace").strip()
    if "url" not in values:
        raise UsageError(f"{path}: the [media] section has no url")
    expires = values.get("expires-in", str(DEFAULT_EXPIRES_IN))
    if not expires.isdigit():
        raise UsageError(f"{path}: media.expires-in {expires!r} is not a number of seconds")
    try:
        return make_config(
            values["url"],
            endpoint_url=values.get("endpoint-url") or None,
            region=values.get("region") or None,
            verify=values.get("verify", "hash"),
            expires_in=int(expires),
        )
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None


def write_config(git_dir: str, media: MediaConfig) -> None:
    """Record ``media`` in the ``[media]`` section of a git directory's config."""
    from dulwich.config import ConfigFile

    path = os.path.join(git_dir, "config")
    config = ConfigFile.from_path(path)
    section = (b"media",)
    config.set(section, b"url", media.url.encode())
    if media.endpoint_url:
        config.set(section, b"endpoint-url", media.endpoint_url.encode())
    if media.region:
        config.set(section, b"region", media.region.encode())
    config.set(section, b"verify", media.verify.encode())
    config.set(section, b"expires-in", str(media.expires_in).encode())
    config.write_to_path()


# -- clients --------------------------------------------------------------------------------
def make_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client (thread-safe; SigV4; credentials from boto3's chain)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingDependency("boto3", "S3 media storage (pip install 'pixvcs[s3]')") from None
    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "max_pool_connections": WORKERS * 2,
        "retries": {"max_attempts": 5, "mode": "standard"},
    }
    try:
        # botocore >= 1.36 adds CRC checksums (and aws-chunked bodies) to every
        # upload by default, which several S3-compatible stores refuse; pixvcs
        # sends its own SHA-256 checksum where it wants one
        config = Config(
            **options,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    except TypeError:  # an older botocore: it has no such defaults to turn off
        config = Config(**options)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class ClientPool:
    """One client per (endpoint, region), made on first use (a server's clients)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str | None, str | None], Any] = {}

    def get(self, media: MediaConfig) -> Any:
        key = (media.endpoint_url, media.region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = make_client(*key)
            return self._clients[key]


def checksum_of(oid: str) -> str:
    """The ``x-amz-checksum-sha256`` value of an object: base64 of the oid's bytes."""
    return base64.b64encode(bytes.fromhex(oid)).decode()


def new_nonce() -> str:
    return os.urandom(16).hex()


def is_nonce(text: str) -> bool:
    return bool(_NONCE.match(text))


# -- the store ------------------------------------------------------------------------------
class S3Media:
    """The media objects of one repository in a bucket."""

    def __init__(self, media: MediaConfig, client: Any = None) -> None:
        self.config = media
        self.bucket = media.bucket
        self.where = media.url
        self.client = (
            client if client is not None else make_client(media.endpoint_url, media.region)
        )

    def key(self, oid: str) -> str:
        return f"{self.config.prefix}objects/{oid[0:2]}/{oid[2:4]}/{oid}"

    def incoming_key(self, oid: str, nonce: str) -> str:
        return f"{self.config.prefix}incoming/{oid}.{nonce}"

    # errors
    def _error(self, e: Exception, what: str) -> RemoteError:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(e, NoCredentialsError):
            return RemoteError(
                self.where,
                f"{what}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or configure ~/.aws)",
            )
        if isinstance(e, ClientError):
            error = e.response.get("Error", {})
            return RemoteError(
                self.where, f"{what}: {error.get('Code', '?')} {error.get('Message', '')}".strip()
            )
        return RemoteError(self.where, f"{what}: {e}")

    @staticmethod
    def _is_absent(e: Exception) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(e, ClientError):
            return False
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("404", "NoSuchKey", "NotFound") or status == 404

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, what) from None

    # existence
    def head(self, key: str, *, checksum: bool = False) -> dict[str, Any] | None:
        """HEAD of a key, or None when it is absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            result: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key, **extra)
        except (ClientError, BotoCoreError) as e:
            if self._is_absent(e):
                return None
            raise self._error(e, f"HEAD {key}") from None
        return result

    def stat(self, oids: Iterable[str]) -> dict[str, int]:
        """oid -> size of those of ``oids`` in the bucket: HEADs in parallel, or
        (above :data:`LIST_ABOVE` oids) listings of the ``objects/<aa>/`` prefixes."""
        wanted = [o for o in dict.fromkeys(oids) if is_oid(o)]
        if not wanted:
            return {}
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            if len(wanted) <= LIST_ABOVE:
                heads = pool.map(lambda o: self.head(self.key(o)), wanted)
                return {o: int(h["ContentLength"]) for o, h in zip(wanted, heads, strict=True) if h}
            want = set(wanted)
            found: dict[str, int] = {}
            for part in pool.map(self._list_fanout, sorted({o[:2] for o in wanted})):
                found.update((o, n) for o, n in part.items() if o in want)
            return found

    def _list_fanout(self, top: str) -> dict[str, int]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.config.prefix}objects/{top}/"
        out: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    name = str(item["Key"]).rsplit("/", 1)[-1]
                    if is_oid(name) and item["Key"] == self.key(name):
                        out[name] = int(item["Size"])
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"LIST {prefix}") from None
        return out

    def missing(self, oids: Iterable[str]) -> list[str]:
        todo = list(dict.fromkeys(oids))
        there = self.stat(todo)
        return [o for o in todo if o not in there]

    def has(self, oid: str) -> bool:
        return self.head(self.key(oid)) is not None

    # presigned URLs (the Batch API hands them out)
    def presign_get(self, oid: str) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(oid)},
            ExpiresIn=self.config.expires_in,
        )
        return url

    def presign_put(self, oid: str, size: int, nonce: str | None) -> tuple[str, dict[str, str]]:
        """A presigned PUT for an upload (to ``incoming/`` with a nonce, else to
        ``objects/``) and the headers the client must send: the size and the
        SHA-256 checksum are signed, so a store that checks signatures refuses
        another length, and one that checks checksums refuses other bytes."""
        key = self.incoming_key(oid, nonce) if nonce else self.key(oid)
        checksum = checksum_of(oid)
        url: str = self.client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ContentLength": size,
                "ChecksumSHA256": checksum,
            },
            ExpiresIn=self.config.expires_in,
        )
        return url, {"x-amz-checksum-sha256": checksum}

    # verification of an upload (the verify action)
    def accept_upload(self, oid: str, size: int, nonce: str | None) -> tuple[str, str] | None:
        """Check an upload; None when ``oid`` is stored with ``size``, else
        (``"missing"`` or ``"corrupt"``, message). Bytes that do not hash to the
        oid are deleted; a stored object is never deleted on a client's word
        alone (a wrong size in the request), only when its bytes are shown bad."""
        if nonce is None:
            return self._accept_in_place(oid, size)
        stored = self.head(self.key(oid))
        staged = self.incoming_key(oid, nonce)
        if stored is not None:
            self._delete(staged)
            if int(stored["ContentLength"]) != size:
                return ("corrupt", "the stored object has another size")
            return None
        got = self._hash(staged, size)
        if got is None:
            return ("missing", "object not found (upload it first)")
        digest, length, etag = got
        if digest != oid or length != size:
            self._delete(staged)
            return (
                "corrupt",
                f"the uploaded bytes ({length}) hash to {digest}, not to {oid} ({size}): not stored",
            )
        self._copy(staged, self.key(oid), size, etag)
        self._delete(staged)
        return None

    def _accept_in_place(self, oid: str, size: int) -> tuple[str, str] | None:
        key = self.key(oid)
        head = self.head(key, checksum=True)
        if head is None:
            return ("missing", "object not found (upload it first)")
        stored = int(head["ContentLength"])
        checked = head.get("ChecksumSHA256") == checksum_of(oid)  # the store checked it
        if not checked and self.config.verify == "checksum":
            got = self._hash(key, stored)  # no (or another) checksum reported: hash it here
            if got is None:
                return ("missing", "object not found (upload it first)")
            if got[0] != oid:
                self._delete(key)
                return ("corrupt", f"the uploaded bytes hash to {got[0]}, not to {oid}: deleted")
        # (verify = hash: objects/ holds only bytes this server hashed already)
        if stored != size:
            return ("corrupt", f"the stored object has {stored} bytes, not {size}")
        return None

    def _hash(self, key: str, size: int) -> tuple[str, int, str] | None:
        """(sha256, length, ETag) of an object read in full (at most ``size + 1``
        bytes are read), or None when it is absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        digest = hashlib.sha256()
        length = 0
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                for chunk in body.iter_chunks(1 << 20):
                    length += len(chunk)
                    if length > size:
                        break
                    digest.update(chunk)
            finally:
                body.close()
        except (ClientError, BotoCoreError) as e:
            if self._is_absent(e):
                return None
            raise self._error(e, f"GET {key}") from None
        return digest.hexdigest(), length, str(response.get("ETag", ""))

    def _copy(self, source: str, dest: str, size: int, etag: str) -> None:
        """Copy ``source`` to ``dest`` only if it still has the ETag that was hashed."""
        from botocore.exceptions import BotoCoreError, ClientError

        copy_source = {"Bucket": self.bucket, "Key": source}
        try:
            if size <= MAX_SINGLE_COPY:
                self.client.copy_object(
                    Bucket=self.bucket, Key=dest, CopySource=copy_source, CopySourceIfMatch=etag
                )
            else:
                self.client.copy(
                    copy_source, self.bucket, dest, ExtraArgs={"CopySourceIfMatch": etag}
                )
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"COPY {source} (changed while it was verified?)") from None

    def _delete(self, key: str) -> None:
        self._call(f"DELETE {key}", self.client.delete_object, Key=key)

    # listing and bulk deletion (gc)
    def listing(self, area: str) -> Iterator[tuple[str, int, float]]:
        """``(key, size, last modified as Unix time)`` of every key under
        ``PREFIX + area`` (``"objects/"`` or ``"incoming/"``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.config.prefix}{area}"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    yield str(item["Key"]), int(item["Size"]), item["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, f"LIST {prefix}") from None

    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete keys, 1000 per request; the first key a store refuses is an error."""
        for start in range(0, len(keys), 1000):
            part = keys[start : start + 1000]
            result = self._call(
                f"DELETE {len(part)} keys",
                self.client.delete_objects,
                Delete={"Objects": [{"Key": k} for k in part], "Quiet": True},
            )
            errors = result.get("Errors") or []
            if errors:
                first = errors[0]
                raise RemoteError(
                    self.where,
                    f"DELETE {first.get('Key')}: {first.get('Code', '?')} "
                    f"{first.get('Message', '')}".strip(),
                )

    # whole objects (directory remotes, the server's own reads)
    def read(self, oid: str) -> bytes:
        """The object's bytes, verified (CorruptObject otherwise); MissingMedia if absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(oid))
            data: bytes = response["Body"].read()
        except (ClientError, BotoCoreError) as e:
            if self._is_absent(e):
                raise MissingMedia([("", oid)], self.where) from None
            raise self._error(e, f"GET {oid}") from None
        got = hashlib.sha256(data).hexdigest()
        if got != oid:
            raise CorruptObject(oid, got, self.where)
        return data

    def put(self, oid: str, data: bytes) -> None:
        """Store bytes already verified against ``oid`` (a store that checks
        checksums checks them again)."""
        self._call(
            f"PUT {oid}",
            self.client.put_object,
            Key=self.key(oid),
            Body=data,
            ContentLength=len(data),
            ChecksumSHA256=checksum_of(oid),
        )

    def download(self, oids: Sequence[str], dest: MediaStore, progress: Progress) -> None:
        """Objects into a local store, in batches: GET and verify in parallel
        into temporary files, one sync, then rename (as for any remote)."""
        os.makedirs(dest.tmp_dir, exist_ok=True)

        def one(oid: str) -> tuple[str, str]:
            return dest.write_temp(self.read(oid), oid), oid

        done = 0
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for start in range(0, len(oids), BATCH):
                batch = dest.absent(oids[start : start + BATCH])
                multi.publish(
                    dest, multi.gather([pool.submit(one, o) for o in batch]), sync_names=False
                )
                done += len(oids[start : start + BATCH])
                progress("download", done, len(oids))

    def upload(self, oids: Sequence[str], src: MediaStore, progress: Progress) -> None:
        """Objects from a local store, each read verified, ``WORKERS`` at a time."""

        def one(oid: str) -> None:
            self.put(oid, src.read(oid))  # verified: a corrupt local object is never sent

        done = 0
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for start in range(0, len(oids), BATCH):
                batch = list(oids[start : start + BATCH])
                list(pool.map(one, batch))
                done += len(batch)
                progress("upload", done, len(oids))


def store_for(git_dir: str, client: Any = None) -> S3Media | None:
    """The S3 media of the repository at ``git_dir``, or None (media on disk)."""
    media = read_config(git_dir)
    return S3Media(media, client) if media is not None else None


def batch_objects(
    s3: S3Media,
    operation: str,
    objects: Sequence[tuple[str, int]],
    verify_href: Callable[[str, str | None], str],
    verify_header: dict[str, str],
    max_size: int,
) -> list[dict[str, Any]]:
    """The Batch API's answer for valid ``(oid, size)`` objects of a repository
    whose media are in S3: presigned GETs for downloads, presigned PUTs (with
    the signed checksum header) and the server's verify action for uploads;
    objects already stored need no upload. One existence check for the batch."""
    stored = s3.stat(o for o, _ in objects)
    expires = s3.config.expires_in
    hash_mode = s3.config.verify == "hash"
    out: list[dict[str, Any]] = []
    for oid, size in objects:
        if operation == "download":
            if oid not in stored:
                out.append(
                    {
                        "oid": oid,
                        "size": size,
                        "error": {"code": 404, "message": "object not found"},
                    }
                )
                continue
            download = {"href": s3.presign_get(oid), "header": {}, "expires_in": expires}
            out.append({"oid": oid, "size": stored[oid], "actions": {"download": download}})
        elif size > max_size:
            message = f"larger than this server accepts ({max_size} bytes)"
            out.append({"oid": oid, "size": size, "error": {"code": 422, "message": message}})
        elif oid in stored:
            out.append({"oid": oid, "size": size})  # nothing to do
        else:
            nonce = new_nonce() if hash_mode else None
            href, header = s3.presign_put(oid, size, nonce)
            upload = {"href": href, "header": header, "expires_in": expires}
            verify = {"href": verify_href(oid, nonce), "header": dict(verify_header)}
            out.append({"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}})
    return out
