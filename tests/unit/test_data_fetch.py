"""``ensure_btcusdt``: index discovery, hash checks, the clean CSV, the cache; the real data."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from levibot.cli import main
from levibot.data import DataFetchError, ensure_btcusdt, find_gaps, load_klines
from levibot.data import _fetch as fetch

RAW = (
    b"# Binance Spot Market Data v2.5.0\n#\n"
    b"date,open,high,low,close,volume,close_time,quote_asset_volume\n"
    b"2017-08-17 04:00:00,4261.48,4313.62,4261.32,4308.83,47.181009,2017-08-17 04:59:59,1\n"
    b"2017-08-17 05:00:00,4308.83,4328.69,4291.37,4315.32,23.234916,2017-08-17 05:59:59,1\n"
    b"2017-08-17 08:00:00,4330.29,4345.45,4309.37,4324.35,7.229691,2017-08-17 08:59:59,1\n"
)
CLEAN = (
    b"timestamp,open,high,low,close,volume\n"
    b"1502942400000,4261.48,4313.62,4261.32,4308.83,47.181009\n"
    b"1502946000000,4308.83,4328.69,4291.37,4315.32,23.234916\n"
    b"1502956800000,4330.29,4345.45,4309.37,4324.35,7.229691\n"
)


def sdist_with(member: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(fetch.MEMBER)
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    return buf.getvalue()


SDIST = sdist_with(RAW)


class Index:
    """A local package index over real HTTP: JSON API (relative URLs, like a mirror) + simple."""

    def __init__(self) -> None:
        self.sdist = SDIST
        self.json_api = True
        self.requests: list[str] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                body, status = index.route(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def route(self, path: str) -> tuple[bytes, int]:
        if path == f"/pypi/{fetch.PACKAGE}/json" and self.json_api:
            entry = {"filename": fetch.SDIST, "url": f"../../packages/ab/{fetch.SDIST}"}
            return json.dumps({"releases": {fetch.VERSION: [entry]}}).encode(), 200
        if path == f"/simple/{fetch.PACKAGE}/":
            html = f'<a href="../../files/{fetch.SDIST}#sha256=x">{fetch.SDIST}</a>'
            return html.encode(), 200
        if path in (f"/packages/ab/{fetch.SDIST}", f"/files/{fetch.SDIST}"):
            return self.sdist, 200
        return b"", 404

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    """A local index, with the published hashes swapped for those of our small sdist."""
    server = Index()
    monkeypatch.setattr(fetch, "SDIST_SHA256", hashlib.sha256(SDIST).hexdigest())
    monkeypatch.setattr(fetch, "MEMBER_SHA256", hashlib.sha256(RAW).hexdigest())
    monkeypatch.setattr(fetch, "CLEAN_SHA256", hashlib.sha256(CLEAN).hexdigest())
    monkeypatch.setattr(fetch, "ROWS", 3)
    yield server
    server.close()


def no_network(url: str) -> Any:
    raise AssertionError(f"network used: {url}")


def test_fetch_follows_the_json_api_and_writes_the_clean_csv(index: Index, tmp_path: Path) -> None:
    path = ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple")
    assert path == tmp_path / "BTCUSDT-1h.csv"
    assert path.read_bytes() == CLEAN
    assert f"/packages/ab/{fetch.SDIST}" in index.requests
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_fetch_falls_back_to_the_simple_page(index: Index, tmp_path: Path) -> None:
    index.json_api = False
    path = ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple/")
    assert path.read_bytes() == CLEAN
    assert index.requests[-1] == f"/files/{fetch.SDIST}"


def test_fetch_honours_pip_index_url(
    index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", f"{index.url}/simple")
    assert fetch._pip_index_urls()[0] == f"{index.url}/simple"
    assert ensure_btcusdt(tmp_path, progress=False).read_bytes() == CLEAN


def test_second_call_uses_the_cache_and_no_network(
    index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple")
    monkeypatch.setattr(fetch, "_open_url", no_network)
    assert ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple") == first


def test_a_corrupted_cache_is_rebuilt(index: Index, tmp_path: Path) -> None:
    path = ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple")
    path.write_bytes(CLEAN[:-20])  # truncated by a crash of some other tool
    assert ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple") == path
    assert path.read_bytes() == CLEAN


def test_a_tampered_sdist_is_refused_and_nothing_is_written(index: Index, tmp_path: Path) -> None:
    index.sdist = sdist_with(RAW.replace(b"4261.48", b"4261.49"))
    with pytest.raises(DataFetchError, match="sha256"):
        ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple")
    assert not (tmp_path / "BTCUSDT-1h.csv").exists()


def test_a_tampered_member_is_refused(
    index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.sdist = sdist_with(RAW + b"2017-08-17 09:00:00,1,1,1,1,1,x,1\n")
    monkeypatch.setattr(fetch, "SDIST_SHA256", hashlib.sha256(index.sdist).hexdigest())
    with pytest.raises(DataFetchError, match=r"\.csv\.bak: sha256"):
        ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/simple")


def test_an_index_without_the_package_is_a_clear_error(index: Index, tmp_path: Path) -> None:
    with pytest.raises(DataFetchError, match="could not download"):
        ensure_btcusdt(tmp_path, progress=False, index_url=f"{index.url}/elsewhere/simple")


def test_data_dir_defaults_to_the_storage_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVIBOT__STORAGE__DATA_DIR", str(tmp_path))
    assert fetch.default_data_dir() == tmp_path / "data"
    monkeypatch.delenv("LEVIBOT__STORAGE__DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert fetch.default_data_dir() == tmp_path / "var" / "data"


# -- the real data, downloaded once ------------------------------------------


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The default (git-ignored) data dir of the checkout: downloaded once, kept across runs."""
    return Path(__file__).resolve().parents[2] / "var" / "data"


@pytest.mark.integration
def test_real_btcusdt_download_has_55765_bars_and_29_gaps(
    real_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ensure_btcusdt(real_dir, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fetch.CLEAN_SHA256
    k = load_klines(path)
    assert (len(k), k.symbol, k.timeframe, k.n_dropped) == (55_765, "BTCUSDT", "1h", 0)
    assert (int(k.ts[0]), int(k.ts[-1])) == (1_502_942_400 * 10**9, 1_704_150_000 * 10**9)
    assert (k.open[0], k.close[-1]) == (4261.48, 44179.55)
    gaps = find_gaps(k)
    assert len(gaps) == 29
    assert sum(g.missing for g in gaps) == 128
    assert [g.kind for g in gaps].count("misaligned") == 1
    monkeypatch.setattr(fetch, "_open_url", no_network)
    assert ensure_btcusdt(real_dir, progress=False) == path


@pytest.mark.integration
def test_cli_data_fetch_prints_the_gap_report(
    real_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "fetch", "--data-dir", str(real_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "55,765 bars" in out and "gaps: 29 (28 with 128 missing bars, 1 misaligned)" in out


def test_cli_data_gaps_reports_gaps_and_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "BTCUSDT-1h.csv"
    path.write_bytes(CLEAN + b"1502960400000,1,1,2,1,1\n")  # high < low
    assert main(["data", "gaps", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dropped rows: 1 (1 inconsistent)" in out and "line 5: inconsistent" in out
    assert "2017-08-17 06:00:00 → 2017-08-17 08:00:00: 2 bars missing" in out
    assert main(["data", "gaps", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["rows"], doc["missing_bars"], doc["dropped"]) == (3, 2, {"inconsistent": 1})


def test_cli_data_gaps_on_a_missing_file_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "gaps", str(tmp_path / "none.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
