"""Download path against a local HTTP server: good, truncated (then resumed), corrupted."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import dataset_fixtures as fx
import pytest
from torchvision import transforms as T

from dmlkit import data
from dmlkit.data import download as dl


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[name]``; ``/truncated/`` announces the full length but sends
    half and closes; ``/corrupt/`` flips bytes; ``Range: bytes=N-`` gets a 206."""

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        kind, _, name = self.path.strip("/").partition("/")
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
        start = 0
        rng = self.headers.get("Range")
        if rng and kind == "good":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if kind == "truncated":
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)
        self.wfile.flush()
        if kind == "truncated":
            self.close_connection = True


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def server(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {"CUB_200_2011.tgz": fx.cub_archive_bytes(tmp_path),
                   "blob.bin": bytes(range(256)) * 4096}
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_good_download(server, tmp_path):
    body = server.files["blob.bin"]
    out = dl.download_url(f"{server.url}/good/blob.bin", tmp_path / "d" / "blob.bin",
                          md5=_md5(body), progress=False)
    assert out.read_bytes() == body
    assert not (tmp_path / "d" / "blob.bin.part").exists()
    # already there and valid: no second request
    n = len(server.requests)
    dl.download_url(f"{server.url}/good/blob.bin", out, md5=_md5(body), progress=False)
    assert len(server.requests) == n


def test_truncated_download_keeps_part_and_resumes(server, tmp_path):
    body = server.files["blob.bin"]
    target = tmp_path / "blob.bin"
    with pytest.raises(dl.DownloadError, match="resume") as err:
        dl.download_url(f"{server.url}/truncated/blob.bin", target, md5=_md5(body),
                        progress=False)
    assert str(target) in str(err.value) or target.name in str(err.value)
    part = tmp_path / "blob.bin.part"
    assert not target.exists()  # nothing that looks complete
    assert part.exists() and part.stat().st_size == len(body) // 2
    out = dl.download_url(f"{server.url}/good/blob.bin", target, md5=_md5(body),
                          progress=False)
    assert out.read_bytes() == body and not part.exists()
    assert server.requests[-1] == ("/good/blob.bin", f"bytes={len(body) // 2}-")


def test_corrupted_download_is_moved_aside(server, tmp_path):
    body = server.files["blob.bin"]
    target = tmp_path / "blob.bin"
    with pytest.raises(dl.DownloadError, match="checksum mismatch") as err:
        dl.download_url(f"{server.url}/corrupt/blob.bin", target, md5=_md5(body),
                        progress=False)
    assert "corrupt" in str(err.value)
    assert not target.exists() and not (tmp_path / "blob.bin.part").exists()
    assert (tmp_path / "blob.bin.corrupt").stat().st_size == len(body)
    # a wrong expected size is caught too
    with pytest.raises(dl.DownloadError, match="size"):
        dl.download_url(f"{server.url}/good/blob.bin", target, size=len(body) + 1,
                        progress=False)
    assert not target.exists()


def test_no_network_error_says_what_to_fetch_and_where(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/CUB_200_2011.tgz"
    with pytest.raises(dl.DownloadError) as err:
        dl.download_url(url, tmp_path / "cub200" / "CUB_200_2011.tgz", progress=False,
                        timeout=5)
    msg = str(err.value)
    assert url in msg and "CUB_200_2011.tgz" in msg and str(tmp_path / "cub200") in msg
    assert isinstance(err.value, RuntimeError)
    assert not list((tmp_path / "cub200").glob("CUB_200_2011.tgz*"))


def test_404_is_reported(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download_url(f"{server.url}/good/nothing.zip", tmp_path / "x.zip", progress=False)


def _patched_cub(monkeypatch, server, kind):
    body = server.files["CUB_200_2011.tgz"]
    archive = data.Archive("CUB_200_2011.tgz", f"{server.url}/{kind}/CUB_200_2011.tgz",
                           _md5(body))
    monkeypatch.setattr(data.CUB200, "archives", (archive,))


def test_dataset_download_end_to_end(server, tmp_path, monkeypatch):
    _patched_cub(monkeypatch, server, "good")
    small = T.Compose([T.Resize(4), T.ToTensor()])
    with pytest.raises(data.DatasetNotFoundError):  # download=False: nothing fetched
        data.CUB200("train", root=tmp_path, transform=small)
    assert server.requests == []
    ds = data.load_dataset("cub200", "test", root=tmp_path, download=True, transform=small)
    assert len(ds) == 9 and list(ds.class_ids) == [101, 150, 200]
    base = tmp_path / "cub200"
    assert (base / "CUB_200_2011.tgz").is_file() and (base / "attributes.txt").is_file()
    assert not list(base.glob(".extract-*")) and not list(base.glob("*.part"))


def test_dataset_download_truncated_then_corrupted(server, tmp_path, monkeypatch):
    base = tmp_path / "cub200"
    _patched_cub(monkeypatch, server, "truncated")
    with pytest.raises(dl.DownloadError, match="CUB-200-2011"):
        data.CUB200("train", root=tmp_path, download=True)
    assert not (base / "CUB_200_2011").exists() and not (base / "CUB_200_2011.tgz").exists()
    assert (base / "CUB_200_2011.tgz.part").exists()
    (base / "CUB_200_2011.tgz.part").unlink()
    _patched_cub(monkeypatch, server, "corrupt")
    with pytest.raises(dl.DownloadError, match="checksum"):
        data.CUB200("train", root=tmp_path, download=True)
    assert not (base / "CUB_200_2011").exists() and not (base / "CUB_200_2011.tgz").exists()
    assert (base / "CUB_200_2011.tgz.corrupt").exists()


def test_extract_damaged_archive_leaves_nothing(tmp_path):
    good = fx.cub_archive_bytes(tmp_path)
    bad = tmp_path / "CUB_200_2011.tgz"
    bad.write_bytes(good[: len(good) // 2])
    dest = tmp_path / "out"
    with pytest.raises(ValueError, match="damaged"):
        dl.extract_archive(bad, dest)
    assert list(dest.iterdir()) == []
    ok = tmp_path / "ok.tgz"
    ok.write_bytes(good)
    moved = dl.extract_archive(ok, dest)
    assert sorted(p.name for p in moved) == ["CUB_200_2011", "attributes.txt"]
    assert (dest / "CUB_200_2011" / "images.txt").is_file()


def test_extract_refuses_paths_outside(tmp_path):
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        dl.extract_archive(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("DMLKIT_DATA", raising=False)
    assert dl.data_root() == Path.home() / ".cache" / "dmlkit"
    monkeypatch.setenv("DMLKIT_DATA", str(tmp_path / "env"))
    assert dl.data_root() == tmp_path / "env"
    assert dl.data_root(tmp_path / "arg") == tmp_path / "arg"
