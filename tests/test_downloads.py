"""The download helpers against a local HTTP server (127.0.0.1) serving archives in the real
layouts (scripts/make_fixtures.py): checksums, resume / restart, and every failure a clear error
that leaves no half-extracted folder. No test touches the internet."""

import csv
import hashlib
import importlib.util
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nibcore import datasets
from nibcore.downloads import DownloadError, extract_zip, fetch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_fixtures",
                                               ROOT / "scripts" / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.root``; ``server.modes[path]`` changes how a file is served:
    ``"slow"`` (answer after ``server.delay`` s), ``"truncate"`` (announce the full length, send
    half, close), ``"norange"`` (ignore Range headers)."""

    def do_GET(self):
        server = self.server
        path = self.path.lstrip("/")
        mode = server.modes.get(path, server.modes.get(path.split("/")[0] + "/*"))
        with server.lock:
            server.log.append((path, self.headers.get("Range")))
            server.active += 1
            server.max_active = max(server.max_active, server.active)
        if mode == "slow":
            time.sleep(server.delay)
        with server.lock:  # counted while the client waits for an answer, before any reply
            server.active -= 1
        try:
            file = server.root / path
            if not file.is_file():
                self.send_error(404, "Not Found")
                return
            data = file.read_bytes()
            start = 0
            ranged = self.headers.get("Range")
            if ranged and mode != "norange":
                start = int(ranged.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416, "Range Not Satisfiable")
                    return
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if mode == "truncate":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.root, httpd.modes, httpd.delay, httpd.log = root, {}, 0.0, []
    httpd.lock, httpd.active, httpd.max_active = threading.Lock(), 0, 0
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    data = tmp_path_factory.mktemp("fixture-data")
    make_fixtures.write_datasets(data)
    httpd.files = make_fixtures.write_archives(data, root, httpd.base_url)
    httpd.data = data
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


@pytest.fixture
def srv(server):
    """The server with default behaviour and an empty request log for each test."""
    server.modes.clear()
    server.log.clear()
    server.delay, server.max_active = 0.0, 0
    yield server
    server.modes.clear()


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Anything a failed run must not leave: partial folders, temporary extraction folders."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".part"))


# --- the helpers, end to end ----------------------------------------------------------------


def test_tiny_imagenet_download_reads_like_the_fixture(srv, tmp_path):
    checksums = {"tiny-imagenet-200.zip": sha256(srv.files["tiny"])}
    folder = datasets.download_tiny_imagenet(tmp_path / "tiny-imagenet-200",
                                             base_url=srv.base_url, checksums=checksums,
                                             progress=False)
    got = datasets.tiny_imagenet(folder)
    want = datasets.tiny_imagenet(srv.data / "tiny-imagenet-200")
    assert len(got) == len(want) == len(make_fixtures.CLASSES) * make_fixtures.VAL_PER_CLASS
    assert [got[i].text for i in range(len(got))] == [want[i].text for i in range(len(want))]
    assert got[0].text.startswith("a photo of a ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-imagenet-200"]  # zip deleted
    again = datasets.download_tiny_imagenet(folder, base_url=srv.base_url, progress=False)
    assert again == folder and len(srv.log) == 1, "a second call downloads nothing"


def test_flickr8k_download_reads_like_the_fixture(srv, tmp_path, tiny):
    checksums = {"caption_datasets.zip": sha256(srv.files["karpathy"]),
                 "Flickr8k_Dataset.zip": sha256(srv.files["flickr"])}
    folder = datasets.download_flickr8k(tmp_path / "flickr8k", base_url=srv.base_url,
                                        checksums=checksums, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["Flicker8k_Dataset",
                                                        "dataset_flickr8k.json"]
    jpgs = list((folder / "Flicker8k_Dataset").iterdir())
    assert jpgs and all(p.suffix == ".jpg" and not p.name.startswith("._") for p in jpgs)
    ds = datasets.flickr8k(folder, model=tiny)
    assert len(ds) == 12 and ds.info["split"] == "val"
    pair = ds[0]
    assert pair.text in pair.meta["captions"] and len(pair.meta["captions"]) == 5
    assert pair.meta["caption_index"] != 0, "the over-long caption is never chosen"


def test_conceptual_captions_skips_dead_links_with_a_bounded_pool(srv, tmp_path, capsys):
    srv.modes["cc/*"], srv.delay = "slow", 0.2
    folder = datasets.download_conceptual_captions(tmp_path / "cc", n=10, base_url=srv.base_url,
                                                   workers=3, timeout=5, progress=False)
    with open(folder / "captions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    dead = set(make_fixtures.CC_DEAD)
    expected_rows = [j for j in range(16) if j not in dead][:10]
    assert [r["file_path"] for r in rows] == [f"images/{j:06d}.jpg" for j in expected_rows]
    assert 1 < srv.max_active <= 3, "fetches run concurrently, at most `workers` at a time"
    summary = capsys.readouterr().out
    assert "10 pairs" in summary and "HTTP 404 ×2" in summary and "not an image ×1" in summary
    ds = datasets.conceptual_captions(folder)
    assert len(ds) == 10 and ds[0].image.mode == "RGB"
    # a second run for more pairs fetches only what is not on disk (dead links are retried)
    srv.log.clear()
    srv.modes.clear()
    datasets.download_conceptual_captions(folder, n=12, base_url=srv.base_url, workers=3,
                                          progress=False)
    fetched = {p for p, _ in srv.log if p.startswith("cc/")}
    assert fetched == {f"cc/img{j:04d}.jpg" for j in dead}
    assert len(datasets.conceptual_captions(folder)) == 12


def test_conceptual_captions_counts_timeouts(srv, tmp_path, capsys):
    srv.modes["cc/img0001.jpg"], srv.delay = "slow", 2.0
    datasets.download_conceptual_captions(tmp_path / "cc", n=3, base_url=srv.base_url,
                                          workers=4, timeout=0.5, progress=False)
    assert "timeout ×1" in capsys.readouterr().out


# --- checksums, resume, restart -------------------------------------------------------------


def test_resume_continues_a_half_finished_download(srv, tmp_path):
    archive = srv.files["tiny"]
    data = archive.read_bytes()
    part = tmp_path / "tiny-imagenet-200.zip.part"
    part.write_bytes(data[:1000])
    got = fetch(f"{srv.base_url}/{archive.name}", tmp_path / archive.name,
                checksum=sha256(archive), progress=False)
    assert got.read_bytes() == data and not part.exists()
    assert srv.log == [(archive.name, "bytes=1000-")]


def test_restart_when_the_server_ignores_ranges(srv, tmp_path):
    archive = srv.files["tiny"]
    srv.modes[archive.name] = "norange"
    (tmp_path / f"{archive.name}.part").write_bytes(b"x" * 500)
    got = fetch(f"{srv.base_url}/{archive.name}", tmp_path / archive.name,
                checksum=sha256(archive), progress=False)
    assert got.read_bytes() == archive.read_bytes()


def test_a_complete_part_file_is_restarted_cleanly(srv, tmp_path):
    archive = srv.files["karpathy"]
    (tmp_path / f"{archive.name}.part").write_bytes(archive.read_bytes() + b"extra")
    got = fetch(f"{srv.base_url}/{archive.name}", tmp_path / archive.name, progress=False)
    assert got.read_bytes() == archive.read_bytes()


# --- failures: one clear line, nothing half-done left behind ------------------------------------


def test_wrong_checksum_deletes_the_file_and_says_so(srv, tmp_path):
    with pytest.raises(DownloadError) as err:
        datasets.download_tiny_imagenet(tmp_path / "tiny-imagenet-200", base_url=srv.base_url,
                                        checksums={"tiny-imagenet-200.zip": "md5:" + "0" * 32},
                                        progress=False)
    text = str(err.value)
    assert "\n" not in text and "md5 checksum mismatch" in text and "deleted" in text
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob("*.part"))


def test_404_names_the_address(srv, tmp_path):
    with pytest.raises(DownloadError) as err:
        datasets.download_tiny_imagenet(tmp_path / "tiny-imagenet-200",
                                        base_url=f"{srv.base_url}/nowhere", progress=False)
    text = str(err.value)
    assert "\n" not in text and "HTTP 404" in text and "/nowhere/tiny-imagenet-200.zip" in text
    assert leftovers(tmp_path) == []


def test_timeout_is_reported_as_such(srv, tmp_path):
    srv.modes["tiny-imagenet-200.zip"], srv.delay = "slow", 2.0
    with pytest.raises(DownloadError) as err:
        datasets.download_tiny_imagenet(tmp_path / "tiny-imagenet-200", base_url=srv.base_url,
                                        timeout=0.3, progress=False)
    text = str(err.value)
    assert "\n" not in text and "timeout" in text and "0.3 s" in text
    assert leftovers(tmp_path) == []


def test_truncated_transfer_keeps_the_part_and_the_next_run_resumes(srv, tmp_path):
    archive = srv.files["tiny"]
    srv.modes[archive.name] = "truncate"
    target = tmp_path / "tiny-imagenet-200"
    with pytest.raises(DownloadError) as err:
        datasets.download_tiny_imagenet(target, base_url=srv.base_url, progress=False)
    text = str(err.value)
    assert "\n" not in text and "connection closed after" in text and "resume" in text
    assert leftovers(tmp_path) == [] and (tmp_path / f"{archive.name}.part").is_file()
    srv.modes.clear()
    datasets.download_tiny_imagenet(target, base_url=srv.base_url,
                                    checksums={archive.name: sha256(archive)}, progress=False)
    assert srv.log[-1][1] == f"bytes={archive.stat().st_size // 2}-"
    assert len(datasets.tiny_imagenet(target)) == 30


def test_truncated_archive_is_deleted_and_nothing_is_extracted(srv, tmp_path):
    broken = srv.root / "broken" / "tiny-imagenet-200.zip"
    broken.parent.mkdir(exist_ok=True)
    data = srv.files["tiny"].read_bytes()
    broken.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DownloadError) as err:
        datasets.download_tiny_imagenet(tmp_path / "tiny-imagenet-200",
                                        base_url=f"{srv.base_url}/broken", progress=False,
                                        checksums={"tiny-imagenet-200.zip": None})
    text = str(err.value)
    assert "\n" not in text and "not a complete zip archive" in text and "deleted" in text
    assert leftovers(tmp_path) == [], "no half-extracted folder, no temporary folder"


def test_damaged_member_fails_extraction_without_a_folder(tmp_path):
    import zipfile

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("top/one.txt", "x" * 1000)
        z.writestr("top/two.txt", "y" * 1000)
    data = bytearray(archive.read_bytes())
    data[data.index(b"y" * 100) + 10] = ord("z")  # flip a byte: member two's CRC fails
    archive.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="not a complete zip archive"):
        extract_zip(archive, tmp_path / "top", inner="top")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_wrong_archive_is_refused(srv, tmp_path):
    with pytest.raises(DownloadError, match="does not hold 'tiny-imagenet-200'"):
        extract_zip(srv.files["karpathy"], tmp_path / "tiny-imagenet-200",
                    inner="tiny-imagenet-200")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_folder_from_an_older_run_is_named(tmp_path):
    (tmp_path / "tiny-imagenet-200" / "val").mkdir(parents=True)
    with pytest.raises(DownloadError, match="exists but lacks val/val_annotations.txt"):
        datasets.download_tiny_imagenet(tmp_path / "tiny-imagenet-200", base_url="http://x")


def test_fixture_layouts_are_what_the_loaders_read(tmp_path, tiny):
    data = make_fixtures.write_datasets(tmp_path)
    assert (data / "tiny-imagenet-200" / "wnids.txt").read_text().split() == \
        [w for w, _ in make_fixtures.CLASSES]
    first = (data / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().split("\n")[0]
    assert first.startswith("val_0.JPEG\tn") and len(first.split("\t")) == 6
    token_line = (data / "flickr8k" / "Flickr8k.token.txt").read_text().split("\n")[0]
    assert "#0\t" in token_line
    assert len(datasets.load_dataset("imagenet", data / "tiny-imagenet-200")) == 30
    assert len(datasets.load_dataset("cc", data / "conceptual_captions")) == 16
    assert len(datasets.load_dataset("flickr8k", data / "flickr8k", model=tiny)) == 12
