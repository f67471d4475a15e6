"""Scenes where they live: URLs read through GDAL's virtual file systems, with range requests.

    is_url("s3://bucket/a/scene.tif")          True (also https://, http://, gs://, az://)
    gdal_path("s3://bucket/a/scene.tif")       "/vsis3/bucket/a/scene.tif" (what GDAL opens)
    shown("https://u:p@host/a.tif?sig=x")      "https://host/a.tif" (what messages and records say)
    url_name("https://host/a/b%20c.tif?x=1")   "b c.tif" (the scene's name: outputs, shards)
    with reading(path): rasterio.open(path)    GDAL settings for the read, scoped to it

Schemes map to GDAL's handlers (https://gdal.org/en/stable/user/virtual_file_systems.html):
http(s) -> /vsicurl/, s3 -> /vsis3/, gs -> /vsigs/, az -> /vsiaz/. Credentials are GDAL's own
reading of the usual environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_PROFILE and ~/.aws, AWS_NO_SIGN_REQUEST=YES for public buckets, AWS_S3_ENDPOINT for another
S3 API; GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*): nothing here reads or stores them, and
`shown` and `scrub` keep URL credentials (user:password@, signed query strings) and the values of
secret variables out of every message and record.

`reading(path)` applies GDAL settings to the reads of one remote scene (rasterio.Env, so they end
with it), each only where the environment does not set it already (a user's GDAL_HTTP_TIMEOUT wins);
GDAL's meaning of each: https://gdal.org/en/stable/user/configoptions.html
1. GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR: no listing of the URL's "directory" and no probes for
   sidecar files (.aux.xml, .ovr, .msk), each a request to a server that has none;
2. CPL_VSIL_CURL_ALLOWED_EXTENSIONS: the URL's own suffix, when it has one, so no other name near it
   is ever tried (a URL without one, a signed STAC asset say, would be refused under it);
3. VSI_CACHE with VSI_CACHE_SIZE of VSI_CACHE_MB: header and block bytes fetched once are kept for
   the scene's later reads, in a bounded cache per open file (decoded blocks are kept by GDAL's
   block cache, bounded by runtime.scene's GDAL_CACHE_MB);
4. GDAL_HTTP_MAX_RETRY / GDAL_HTTP_RETRY_DELAY: 429 and 5xx answers and dropped connections are
   retried, MAX_RETRY times after the first try (GDAL doubles the delay each time);
5. every request is bounded: GDAL_HTTP_CONNECTTIMEOUT for the connection, GDAL_HTTP_LOW_SPEED_TIME
   with _LIMIT for a server that stops sending (under 1 byte/s for that long), GDAL_HTTP_TIMEOUT for
   the whole request (GDAL's largest read-ahead is 2 MB: 60 s is 35 KB/s); a server that stops
   answering fails the read after at most (MAX_RETRY + 1) x LOW_SPEED_TIME plus the retry delays,
   as one error line, instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

SCHEMES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
VSI_CACHE_MB = 32
SETTINGS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(VSI_CACHE_MB * 1024 * 1024),
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
    "GDAL_HTTP_LOW_SPEED_TIME": "20",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    "GDAL_HTTP_TIMEOUT": "60",
}
# variables whose values are secrets: scrubbed from any message that could reach a user or a file
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GS_SECRET_ACCESS_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "GDAL_HTTP_USERPWD",
    "GDAL_HTTP_BEARER",
)
_URL = re.compile(r"\b(?:https?|s3|gs|az)://[^\s'\"<>]+")


def is_url(text: str | os.PathLike) -> bool:
    """Whether `text` names a scene by a URL of a scheme GDAL reads (see SCHEMES)."""
    if not isinstance(text, str) or "://" not in text:
        return False
    return text.partition("://")[0].lower() in SCHEMES


def gdal_path(url: str) -> str:
    """The GDAL virtual-file-system path of `url` (query string kept: signed URLs need it)."""
    parts = urlsplit(url)
    prefix = SCHEMES[parts.scheme.lower()]
    if prefix == "/vsicurl/":
        return prefix + url
    return prefix + parts.netloc + parts.path + (f"?{parts.query}" if parts.query else "")


def shown(path: str | os.PathLike) -> str:
    """`path` as messages and records show it: a URL without user:password@, query or fragment
    (where signed URLs carry their credentials); a GDAL /vsicurl/ path likewise; a file as it is."""
    text = str(path)
    if text.startswith("/vsicurl/"):
        return shown(text[len("/vsicurl/") :])
    if not is_url(text):
        return text
    scheme, _, rest = text.partition("://")
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]  # no query or fragment
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"  # no user:password@


def url_problem(url: str) -> str | None:
    """Why GDAL could not read `url` at all (no host or bucket, a bad port, no file name), checked
    before any request is made; None for a URL it can try."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not parts.hostname:
        return (
            "the URL names no host"
            if parts.scheme.lower() in ("http", "https")
            else ("the URL names no bucket or container")
        )
    if not url_name(url):
        return "the URL names no file"
    return None


def url_name(url: str) -> str:
    """The file name at the end of a URL's path, percent-decoded ("" when the path ends in /)."""
    rest = re.split(r"[?#]", url.partition("://")[2], maxsplit=1)[0]
    path = rest.partition("/")[2]
    return unquote(path.rsplit("/", 1)[-1])


def scrub(text: str) -> str:
    """`text` with every URL shown as `shown` does and every secret variable's value masked."""
    text = _URL.sub(lambda m: shown(m[0]), text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def settings(path: str) -> dict[str, str]:
    """The GDAL settings `reading(path)` applies (see the module docstring), none the environment
    sets already."""
    chosen = dict(SETTINGS)
    suffix = PurePosixPath(url_name(path)).suffix
    if suffix:
        chosen["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = suffix
    return {k: v for k, v in chosen.items() if k not in os.environ}


@contextlib.contextmanager
def reading(path: str | os.PathLike, **extra) -> Iterator[None]:
    """A rasterio.Env for reading `path`: the remote settings for a URL, `extra` (GDAL options)
    for any path."""
    import rasterio

    text = str(path)
    options = {**(settings(text) if is_url(text) else {}), **extra}
    with rasterio.Env(**options):
        yield


def open_path(path: str | os.PathLike) -> str:
    """What to hand rasterio.open: GDAL's path for a URL, a file path as it is."""
    text = str(path)
    return gdal_path(text) if is_url(text) else text


# GDAL's words for what went wrong over the network -> what a user can act on
_CAUSES = (
    (
        re.compile(r"HTTP response code: 404|404 Not Found|NoSuchKey|NoSuchBucket"),
        "not found (HTTP 404)",
    ),
    (
        re.compile(
            r"HTTP response code: 40[13]|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch"
            r"|Forbidden|signature you provided|Access Key Id you provided"
        ),
        "access denied (HTTP 403): check the credentials in the environment (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE; AWS_NO_SIGN_REQUEST=YES for a public bucket)",
    ),
    (
        re.compile(r"HTTP response code: (5\d\d)"),
        "the server failed (HTTP {0}) after GDAL's retries",
    ),
    (
        re.compile(r"timed out|timeout|Operation too slow", re.I),
        "the server did not answer in time (timed out)",
    ),
    (
        re.compile(r"Could not connect|Failed to connect|Connection refused|Couldn't resolve host"),
        "cannot connect to the server (down, or a wrong host or port)",
    ),
)
DROPPED = (
    "the network read failed part-way (the connection dropped, or the server stopped answering); "
    "a rerun of the same command redoes this scene"
)


def network_cause(message: str) -> str | None:
    """A user's reading of a GDAL network error message, or None when it is not one."""
    for pattern, meaning in _CAUSES:
        found = pattern.search(message)
        if found:
            return meaning.format(*found.groups())
    return None


def explain(path: str | os.PathLike, message: str) -> str:
    """GDAL's `message` about `path`, scrubbed, and said plainly when it is a network failure."""
    message = scrub(message)
    if not is_url(str(path)) and not str(path).startswith("/vsi"):
        return message
    cause = network_cause(message)
    if cause:
        return cause
    if re.search(r"IReadBlock failed|TIFFReadEncoded|TIFFFillTile|Read error", message):
        return DROPPED
    if "not recognized as being in a supported file format" in message:
        return (
            "GDAL could not read a raster header there (not a raster, or the server stopped "
            "answering part-way)"
        )
    return message
