"""A real S3-compatible server for tests: moto's standalone server as a
subprocess on a free loopback port, behind a small recording proxy (so a test
can see every request that reached "S3", headers included).

moto is a test dependency: if it is missing, these fixtures fail (nothing is
skipped in CI).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import moto  # noqa: F401 - a missing moto is an error here, not a skip
import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "pixvcs-test-key",
    "AWS_SECRET_ACCESS_KEY": "pixvcs-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Request:
    method: str
    path: str  # with the query string
    headers: dict[str, str]


@dataclass
class Log:
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proxy(upstream_port: int, log: Log) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return None

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            log.add(Request(self.command, self.path, dict(headers)))
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class MotoS3:
    """The running server: ``endpoint`` is the recording proxy in front of moto."""

    endpoint: str
    log: Log

    def client(self) -> Any:
        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).client("s3", endpoint_url=self.endpoint)


@contextmanager
def run_moto(workdir: Path) -> Iterator[MotoS3]:
    """moto's server as a subprocess on a free loopback port, and the proxy."""
    port = _free_port()
    logfile = workdir / "moto.log"
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(CREDENTIALS)
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start:\n{logfile.read_text()}")
                time.sleep(0.1)
        log = Log()
        proxy = _proxy(port, log)
        try:
            yield MotoS3(f"http://127.0.0.1:{proxy.server_port}", log)
        finally:
            proxy.shutdown()
            proxy.server_close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class Bucket:
    """A fresh bucket on the moto server, with the AWS environment pointing at it."""

    name: str
    s3: MotoS3
    client: Any

    @property
    def endpoint(self) -> str:
        return self.s3.endpoint

    def keys(self, prefix: str = "") -> dict[str, bytes]:
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                key = item["Key"]
                out[key] = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return out


def fresh_bucket(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """A new bucket, and the AWS environment (dummy credentials) set for it."""
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # no user config or credentials file may leak in
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = moto_server.client()
    name = f"pix-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    moto_server.log.clear()
    return Bucket(name, moto_server, client)
