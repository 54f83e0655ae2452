"""Downloading files and archives: resumable, checksummed, with progress bars and clear errors.

Used by the dataset helpers of :mod:`nibcore.datasets` (Colab). Every failure is a
:class:`DownloadError` with a one-line message that names the address and what to do (a target
that cannot be written — a read-only folder, a file where a folder should be, a folder where the
file should be — is refused before anything is fetched, with the one-line ``OSError`` of
:mod:`nibcore.checks`); nothing half-done is left where a loader would look:

* a download is written to ``<file>.part`` and renamed only when complete (and its checksum, when
  known, matches); a run that stopped half-way resumes from the ``.part`` file (an HTTP range
  request), or restarts when the server ignores ranges;
* an archive is extracted into a temporary folder next to its target and moved into place only
  when the whole archive was read; a damaged archive is deleted so the next run downloads it
  afresh.

Only the standard library speaks HTTP here (``urllib``); ``tqdm`` draws the progress bars.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import socket
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from .checks import check_file, check_output_file, check_output_folder

#: Sent with every request: some hosts refuse urllib's default agent.
USER_AGENT = "nibcore (+https://pypi.org/project/nibcore) python-urllib"
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download or extraction failed; the message says what happened and what to do."""


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in blocks): nibcore's one file hash — downloads'
    checksums, the store's provenance, the sweeps' cache fingerprint, the mini model's card."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:<hex>"`` / ``"sha256:<hex>"`` -> ``(algorithm, hex)``."""
    algorithm, _, digest = checksum.partition(":")
    if algorithm not in ("md5", "sha1", "sha256") or not digest:
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>', "
                         f"got {checksum!r}")
    return algorithm, digest.lower()


def _request(url: str, start: int = 0) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def _http_error(url: str, err: Exception, timeout: float) -> DownloadError:
    """One line for the ways a request fails before any data arrives."""
    if isinstance(err, urllib.error.HTTPError):
        hint = {404: "the file is not at this address (moved or removed?); pass base_url= to "
                     "use a mirror",
                403: "the server refuses access",
                429: "too many requests; wait and run again"}.get(
            err.code, "the server failed; run again later")
        return DownloadError(f"{url}: HTTP {err.code} {err.reason} — {hint}")
    reason = getattr(err, "reason", err)
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return DownloadError(f"{url}: no answer within {timeout:g} s (timeout) — check the "
                             f"network, or pass a larger timeout=")
    return DownloadError(f"{url}: cannot connect ({reason}) — check the network and the address")


def fetch(url: str, dest: str | Path, *, checksum: str | None = None, timeout: float = 30.0,
          progress: bool = True, opener: Callable = urllib.request.urlopen) -> Path:
    """Download ``url`` to ``dest`` (skipped when ``dest`` exists and matches ``checksum``).

    Resumes a ``dest.part`` left by an interrupted run; verifies ``checksum`` (``"md5:<hex>"`` /
    ``"sha256:<hex>"``; ``None``: no check) before renaming the part to ``dest``; shows a progress
    bar on stderr. A file that fails its checksum is deleted. Raises :class:`DownloadError`.
    """
    dest = Path(dest).expanduser()
    algo = parse_checksum(checksum) if checksum else None
    if dest.is_file() and (algo is None or file_digest(dest, algo[0]) == algo[1]):
        return dest
    check_output_file(dest, "download target")
    dest.unlink(missing_ok=True)  # a stale or damaged earlier download: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        response = opener(_request(url, start), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the part is complete, or longer than the file: restart
            part.unlink()
            return fetch(url, dest, checksum=checksum, timeout=timeout, progress=progress,
                         opener=opener)
        raise _http_error(url, err, timeout) from None
    except (urllib.error.URLError, OSError) as err:
        raise _http_error(url, err, timeout) from None
    with response:
        resumed = start and response.status == 206
        if start and not resumed:
            start = 0  # the server ignored the range: start again
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        done = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name, disable=not progress, file=sys.stderr, mininterval=1.0,
                   leave=False)
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    bar.update(len(block))
        except (http.client.IncompleteRead, ConnectionError):
            pass  # reported below as a short download
        except (socket.timeout, TimeoutError):
            raise DownloadError(
                f"{url}: stalled for {timeout:g} s after {done:,} bytes (timeout) — run again to "
                f"resume from there") from None
        finally:
            bar.close()
    if total is not None and done < total:
        raise DownloadError(f"{url}: connection closed after {done:,} of {total:,} bytes — run "
                            f"again to resume from there")
    if algo is not None:
        got = file_digest(part, algo[0])
        if got != algo[1]:
            part.unlink()
            raise DownloadError(f"{url}: {algo[0]} checksum mismatch (expected {algo[1]}, got "
                                f"{got}) — the file was deleted; run again (a mirror with another "
                                f"version: give its checksum, or None to skip the check)")
    part.replace(dest)
    return dest


def extract_zip(archive: str | Path, target: str | Path, *, inner: str | None = None,
                members: Callable[[str], bool] | None = None,
                needed: Iterable[str] = ()) -> Path:
    """Extract ``archive`` so that ``target`` is complete or absent, never half-filled.

    ``inner``: the archive's top folder whose contents become ``target`` (``None``: the whole
    archive); ``members``: a filter on member names (e.g. skip ``__MACOSX/``); ``needed``: paths
    relative to ``target`` that must exist afterwards. A damaged archive is deleted (the next
    run downloads it afresh) and :class:`DownloadError` says so.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise DownloadError(f"{target} already exists; remove it to extract {archive.name} again")
    check_file(archive, "archive")
    check_output_folder(target.parent, "extraction folder")
    tmp = target.with_name(f".{target.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        try:
            with zipfile.ZipFile(archive) as z:  # member CRCs are checked while extracting
                z.extractall(tmp, [n for n in z.namelist() if members is None or members(n)])
        except (zipfile.BadZipFile, EOFError, zlib.error) as err:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{archive} is not a complete zip archive "
                                f"({type(err).__name__}: {err}) — it was deleted; run again to "
                                f"download it afresh") from None
        except OSError as err:  # disk full, permissions
            raise DownloadError(f"cannot extract {archive} into {target.parent}: {err}") from None
        source = tmp / inner if inner else tmp
        missing = [n for n in needed if not (source / n).exists()]
        if not source.is_dir() or missing:
            what = missing[0] if missing else inner
            raise DownloadError(f"{archive} does not hold {what!r} where expected — is it the "
                                f"right file?")
        source.replace(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def fetch_many(jobs: Sequence[tuple[str, Callable[[bytes], None]]], *, workers: int = 16,
               timeout: float = 10.0, max_bytes: int = 20 << 20, progress: bool = True,
               desc: str = "files", opener: Callable = urllib.request.urlopen
               ) -> list[str | None]:
    """Fetch many small files concurrently (at most ``workers`` at a time).

    ``jobs``: ``(url, save)`` pairs; ``save(data)`` stores the bytes (and may raise to reject
    them). Returns, per job in order, ``None`` on success or a short reason (``"HTTP 404"``,
    ``"timeout"``, ``"not an image: ..."``). Never raises for one bad link.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def one(job: tuple[str, Callable[[bytes], None]]) -> str | None:
        url, save = job
        try:
            with opener(_request(url), timeout=timeout) as r:
                data = r.read(max_bytes + 1)
            if len(data) > max_bytes:
                return f"larger than {max_bytes >> 20} MB"
            save(data)
            return None
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except (socket.timeout, TimeoutError):
            return "timeout"
        except urllib.error.URLError as err:
            reason = err.reason
            return "timeout" if isinstance(reason, (socket.timeout, TimeoutError)) else \
                f"unreachable: {reason}"
        except ValueError as err:  # save() rejected the bytes
            return str(err)[:80]
        except Exception as err:  # odd servers: one failed link, not a failed run
            return f"{type(err).__name__}: {str(err)[:80]}"

    results: list[str | None] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress,
                 file=sys.stderr, mininterval=1.0, leave=False) as bar:
        for result in pool.map(one, jobs):
            results.append(result)
            bar.update(1)
    return results


__all__ = ["DownloadError", "fetch", "extract_zip", "fetch_many", "parse_checksum"]
