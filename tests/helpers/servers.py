"""Servers on 127.0.0.1 for the remote-scene tests and bench/bench_remote.py: a static HTTP server
that honours Range requests, counts what it sends and can misbehave on purpose; and moto's S3.

    with RangeServer(folder) as server:           # an ephemeral port, stopped on exit
        url = server.url("scene.tif")             # http://127.0.0.1:PORT/scene.tif
        server.sent_bytes("scene.tif")            # body bytes sent for that file so far
        server.fault("scene.tif", Fault("status", 500, times=1))   # the next request gets a 500

Range handling follows RFC 9110 section 14: one `bytes=a-b`, `a-` or `-n` range gives 206 with
Content-Range; several ranges give a multipart/byteranges 206 (section 14.6); a range past the end
gives 416. `latency` seconds are slept before each response (the round trip of a far server).

Faults (`Fault.kind`), each for the next `times` requests of its file (after `after` good ones):
- "status": answer with HTTP `code` (404, 403, 500...) and no body;
- "drop": send the headers and half the body, then close the connection (a dropped connection);
- "hang": accept the request and never answer until the server stops (a server that stopped
  answering; the client's timeout must end it).

Standard library only, so bench/bench_remote.py can import it as `tests.helpers.servers` when run
with `python -m bench.bench_remote` from the repository root.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"(\d*)-(\d*)")
_TYPES = {".tif": "image/tiff", ".json": "application/json", ".geojson": "application/geo+json"}


@dataclass
class Fault:
    kind: str  # status | drop | hang
    code: int = 500
    times: int = 1  # how many requests it hits
    after: int = 0  # good requests of the file before it starts


def _ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """`bytes=...` -> inclusive (first, last) pairs within `size`; None when none is satisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes":
        return None
    out = []
    for part in spec.split(","):
        m = _RANGE.fullmatch(part.strip())
        if not m or m[1] == m[2] == "":
            return None
        if m[1] == "":  # the last n bytes
            first, last = max(0, size - int(m[2])), size - 1
        else:
            first, last = int(m[1]), min(size - 1, int(m[2]) if m[2] else size - 1)
        if first <= last:
            out.append((first, last))
    return out or None


class RangeServer:
    """Serves the files of `root` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, latency: float = 0.0):
        self.root = Path(root)
        self.latency = latency
        self._lock = threading.Lock()
        self._sent: dict[str, int] = defaultdict(int)
        self._requests: dict[str, int] = defaultdict(int)
        self._faults: dict[str, list[Fault]] = defaultdict(list)
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server._answer(self, body=False)

            def do_GET(self):
                server._answer(self, body=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------ use

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def sent_bytes(self, name: str | None = None) -> int:
        with self._lock:
            return self._sent[name] if name else sum(self._sent.values())

    def requests(self, name: str | None = None) -> int:
        with self._lock:
            return self._requests[name] if name else sum(self._requests.values())

    def reset_counts(self) -> None:
        with self._lock:
            self._sent.clear()
            self._requests.clear()

    def fault(self, name: str, fault: Fault) -> None:
        with self._lock:
            self._faults[name].append(fault)

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    # ------------------------------------------------------------------ serving

    def _take_fault(self, name: str) -> Fault | None:
        with self._lock:
            seen = self._requests[name]
            self._requests[name] += 1
            for fault in self._faults[name]:
                if fault.times > 0 and seen >= fault.after:
                    fault.times -= 1
                    return fault
            return None

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._sent[name] += n

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        name = h.path.split("?", 1)[0].lstrip("/")
        fault = self._take_fault(name)
        if self.latency:
            time.sleep(self.latency)
        if fault is not None and fault.kind == "hang":
            self._stopping.wait()
            h.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            self._empty(h, fault.code)
            return
        path = self.root / name
        if not name or ".." in Path(name).parts or not path.is_file():
            self._empty(h, 404)
            return
        size = path.stat().st_size
        header = h.headers.get("Range")
        ranges = _ranges(header, size) if header else [(0, size - 1)]
        if ranges is None:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{size}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        kind = _TYPES.get(path.suffix.lower(), "application/octet-stream")
        if not header:
            status, payload, headers = 200, _read(path, 0, size - 1), {"Content-Type": kind}
        elif len(ranges) == 1:
            (first, last) = ranges[0]
            status, payload = 206, _read(path, first, last)
            headers = {"Content-Type": kind, "Content-Range": f"bytes {first}-{last}/{size}"}
        else:
            boundary = "scalemae-det-range-boundary"
            parts = [
                f"--{boundary}\r\nContent-Type: {kind}\r\nContent-Range: bytes {a}-{b}/{size}"
                f"\r\n\r\n".encode()
                + _read(path, a, b)
                + b"\r\n"
                for a, b in ranges
            ]
            status, payload = 206, b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers = {"Content-Type": f"multipart/byteranges; boundary={boundary}"}
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if not body:
            return
        if fault is not None and fault.kind == "drop":
            half = payload[: len(payload) // 2]
            with contextlib.suppress(OSError):
                h.wfile.write(half)
                h.wfile.flush()
            self._count(name, len(half))
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        with contextlib.suppress(OSError):  # a client that gave up mid-body
            h.wfile.write(payload)
        self._count(name, len(payload))

    @staticmethod
    def _empty(h: BaseHTTPRequestHandler, code: int) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "0")
        h.end_headers()


def _read(path: Path, first: int, last: int) -> bytes:
    """Bytes first..last (inclusive) of a file, read alone (a scene can be tens of MB)."""
    with open(path, "rb") as f:
        f.seek(first)
        return f.read(last - first + 1)


def write_cog(
    src: str | os.PathLike, dst: str | os.PathLike, blocksize: int = 128, **options
) -> Path:
    """`src` rewritten as a Cloud Optimized GeoTIFF by rasterio's COG driver (uncompressed unless
    `options` say otherwise, so the bytes a read needs are proportional to the pixels it reads)."""
    import rasterio

    with rasterio.open(src) as ds:
        profile = {
            "driver": "COG",
            "width": ds.width,
            "height": ds.height,
            "count": ds.count,
            "dtype": ds.dtypes[0],
            "crs": ds.crs,
            "transform": ds.transform,
            "nodata": ds.nodata,
            "blocksize": blocksize,
            "compress": "NONE",
            **options,
        }
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read())
    return Path(dst)


class S3Server:
    """moto's S3 API server on 127.0.0.1 (moto 5: moto.server.ThreadedMotoServer), with the
    environment GDAL's /vsis3/ and boto3 need to reach it: `env(key, secret)`."""

    REGION = "us-east-1"

    def __init__(self):
        from moto.server import ThreadedMotoServer

        with socket.socket() as probe:  # an ephemeral port (moto takes a port, not 0)
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, key: str = "testing-key-id", secret: str = "testing-secret") -> dict[str, str]:
        """AWS_* variables pointing GDAL (host:port, plain http, path-style) and boto3 here."""
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": self.REGION,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_S3_ENDPOINT": self.endpoint,  # GDAL: host:port
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_ENDPOINT_URL": f"http://{self.endpoint}",  # boto3
        }

    def _client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=f"http://{self.endpoint}",
            region_name=self.REGION,
            aws_access_key_id="testing-key-id",
            aws_secret_access_key="testing-secret",
        )

    def put(self, bucket: str, key: str, path: str | os.PathLike) -> str:
        """Upload a file (creating the bucket) and return its s3:// URL."""
        client = self._client("s3")
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        client.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def require_auth(self) -> tuple[str, str]:
        """From now on every request is checked against IAM (moto's /moto-api/reset-auth): returns
        the access key id and secret of a user allowed all of S3; any other key is refused (403)."""
        import json

        iam = self._client("iam")
        iam.create_user(UserName="reader")
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [allow]}
        iam.put_user_policy(UserName="reader", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        self._reset_auth(b"0")
        return key["AccessKeyId"], key["SecretAccessKey"]

    def _reset_auth(self, count: bytes) -> None:
        """Check every request after the next `count` against IAM (b"inf": none is)."""
        import urllib.request

        # a plain body: a form content type would have werkzeug parse it away from request.data
        request = urllib.request.Request(
            f"http://{self.endpoint}/moto-api/reset-auth",
            data=count,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def __enter__(self) -> S3Server:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):  # auth off again: moto's settings are process-wide
            self._reset_auth(b"inf")
        self._server.stop()
