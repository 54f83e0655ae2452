"""Result files: the JSON Lines files that evaluation runs append rows to, and their one reader.

Every file of rows nibcore writes or reads goes through this module: the ``out=`` file of
:func:`nibcore.evaluate`, the part files of a sharded (torchrun) run, and the results store's
files (:mod:`nibcore.store`). The format: one JSON object per line, UTF-8, each line ended by a
newline; blank lines are skipped.

Runs append rows as they compute them, so a run killed during a write (a kill, a power loss)
can leave a *cut* last line: a prefix of a row, without its newline. The rules:

* **Reading** (:func:`read`, :func:`scan`) ignores a cut last line — a last line that has no
  trailing newline and does not decode to a JSON object — and says so with a
  :class:`CutLineWarning`. Any other line that does not decode to a JSON object is an error:
  :class:`ResultFileError`, whose one-line message names the file, the line and what to do.
* **Appending** (:func:`append`) first sets a cut last line aside: its bytes are appended to
  ``<file>.partial`` (:func:`partial_file`; one cut line per line there) and the file is
  truncated to its last complete line, with a :class:`CutLineWarning` saying so
  (:func:`repair`). A resumed run then recomputes the rows it lost, and the file never holds a
  corrupted line in its middle.
* **Rewriting** (:func:`compact`) sets a cut last line aside the same way, then replaces the
  file atomically (a temporary file in the same folder, then :func:`os.replace`).
* **Merging** the part files of a sharded run (:func:`merge`) reads each part by the same rules
  (a cut last line of a part is set aside into that part's ``.partial`` before the part is
  removed; a malformed line anywhere else stops the merge before anything is written).

Messages about cut lines are warnings (:class:`CutLineWarning`, a :class:`UserWarning`), never
printed directly, so a caller filters or records them as it does any other warning.
"""

from __future__ import annotations

import glob
import inspect
import itertools
import json
import os
import re
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .checks import check_file

__all__ = ["CutLineWarning", "ResultFileError", "Scan", "append", "compact", "key_of", "merge",
           "part_file", "part_files", "partial_file", "read", "repair", "scan"]

Row = dict[str, Any]

#: Bytes read at a time when looking for the start of a file's last line.
_BLOCK = 1 << 16


class ResultFileError(ValueError):
    """A result file holds a line that is not a JSON object and is not a cut last line; the
    message (one line) names the file, the line number and what to do."""


class CutLineWarning(UserWarning):
    """A result file's last line was cut by an interrupted write: ignored when reading, set
    aside into ``<file>.partial`` before appending or rewriting."""


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found in a result file.

    Attributes:
        path: the file.
        rows: its rows (JSON objects), in file order; a cut last line is not among them.
        cut: the bytes of a cut last line (no trailing newline, not a JSON object), or None.
        cut_line: the line number (1-based) of the cut line, or None.
    """

    path: Path
    rows: list[Row]
    cut: bytes | None = None
    cut_line: int | None = None


def partial_file(path: str | Path) -> Path:
    """Where the cut last lines of ``path`` are set aside: ``<path>.partial``.

    Args:
        path: a result file.
    """
    path = Path(path)
    return path.with_name(path.name + ".partial")


def key_of(row: Row, key: Sequence[str]) -> tuple:
    """The identity of ``row``: its values of the columns ``key`` (None where missing).

    Args:
        row: one row.
        key: the columns that identify a row (e.g. :data:`nibcore.evaluation.KEY`).
    """
    return tuple(row.get(k) for k in key)


def _decode(line: bytes) -> tuple[Row | None, str]:
    """``(row, "")`` for a line holding a JSON object, else ``(None, why not)``."""
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError as err:
        return None, f"not JSON: {err.msg} at column {err.colno}"
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number")
        return None, f"JSON but {kind}, not an object"
    return value, ""


def _warn(message: str) -> None:
    """Issue a :class:`CutLineWarning` attributed to the first caller outside this module."""
    level, frame = 2, inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # _warn's caller
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CutLineWarning, stacklevel=level)


def _malformed(path: Path, number: int, why: str) -> ResultFileError:
    return ResultFileError(
        f"{path}: line {number} is {why}; only a cut last line (no newline) is tolerated: "
        f"repair or delete line {number} (or the file, to start afresh), then run again")


def scan(path: str | Path, missing_ok: bool = False) -> Scan:
    """Read a result file by the module's rules: its rows, and its cut last line if any.

    A cut last line is reported with a :class:`CutLineWarning` (the file is not changed).

    Args:
        path: the file.
        missing_ok: a missing file reads as empty instead of raising FileNotFoundError.

    Raises:
        ResultFileError: a line other than a cut last line is not a JSON object.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return Scan(path, [])
    # the last item: what follows the last newline
    lines = check_file(path, "result file").read_bytes().split(b"\n")
    rows: list[Row] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row, why = _decode(line)
        if row is not None:
            rows.append(row)
        elif number == len(lines):  # no newline after it: a write that was cut
            _warn(f"{path}: ignored line {number}, cut by an interrupted write ({len(line)} "
                  f"bytes, no newline)")
            return Scan(path, rows, line, number)
        else:
            raise _malformed(path, number, why)
    return Scan(path, rows)


def read(path: str | Path, missing_ok: bool = False) -> list[Row]:
    """The rows of a result file, in file order (:func:`scan`'s rows).

    Args:
        path: the file.
        missing_ok: a missing file reads as no rows instead of raising FileNotFoundError.

    Raises:
        ResultFileError: a line other than a cut last line is not a JSON object.
    """
    return scan(path, missing_ok).rows


def _last_line(path: Path) -> tuple[int, bytes] | None:
    """``(offset, bytes)`` of the file's last line when it has no trailing newline; None when
    the file is missing or empty or ends with a newline."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return None
        tail, pos = b"", end
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            tail = block + tail
            cut = block.rfind(b"\n")
            if cut >= 0:
                return pos + cut + 1, tail[cut + 1:]
        return 0, tail


def _count_lines(path: Path, upto: int) -> int:
    """Newlines in the first ``upto`` bytes of ``path``."""
    count = 0
    with open(path, "rb") as f:
        while upto > 0:
            block = f.read(min(_BLOCK, upto))
            if not block:
                break
            count += block.count(b"\n")
            upto -= len(block)
    return count


def _sync_write(path: Path, mode: str, data: bytes) -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def repair(path: str | Path) -> int:
    """Set a cut last line of ``path`` aside: append its bytes (and a newline) to
    :func:`partial_file`, truncate ``path`` to its last complete line and say so with a
    :class:`CutLineWarning`. A file without a cut last line is left as it is.

    Args:
        path: the file (missing: nothing to do).

    Returns:
        The number of bytes set aside (0: nothing was cut).
    """
    path = Path(path)
    last = _last_line(path)
    if last is None:
        return 0
    start, line = last
    if not line.strip() or _decode(line)[0] is not None:
        return 0  # a complete row that lacks only its newline: the next append adds it
    number = _count_lines(path, start) + 1
    partial = partial_file(path)
    _sync_write(partial, "ab", line + b"\n")  # first: a crash now loses nothing
    with open(path, "r+b") as f:
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    _warn(f"{path}: line {number} was cut by an interrupted write ({len(line)} bytes, no "
          f"newline): set it aside into {partial.name} and truncated the file before it")
    return len(line)


def append(path: str | Path, rows: Iterable[Row]) -> None:
    """Append ``rows`` to ``path`` (one JSON object a line), flushed and fsync'ed.

    The folder is created when missing; a cut last line is set aside first (:func:`repair`),
    and a complete last line that lacks its newline gets one.

    Args:
        path: the file.
        rows: the rows (JSON-serialisable dicts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair(path)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if _last_line(path) is not None:  # a complete row without its newline
        text = "\n" + text
    _sync_write(path, "ab", text.encode("utf-8"))


def compact(path: str | Path, key: Sequence[str],
            transform: Callable[[Row], Row] | None = None) -> int:
    """Rewrite ``path`` with one copy of each row — the last, by ``key`` — in first-seen order.

    A cut last line is set aside first (:func:`repair`). The new file is written to a temporary
    file in the same folder (non-ASCII characters as UTF-8), fsync'ed and moved over ``path``
    with :func:`os.replace`, so a reader sees the old file or the new one, never a mixture.

    Args:
        path: the file (it must exist).
        key: the columns that identify a row.
        transform: applied to each kept row before it is written (e.g. rounding).

    Returns:
        The number of rows written.

    Raises:
        ResultFileError: a line other than a cut last line is not a JSON object.
    """
    path = Path(path)
    repair(path)
    kept: dict[tuple, Row] = {}
    for row in read(path):
        kept[key_of(row, key)] = transform(row) if transform is not None else row
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in kept.values():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(kept)


def part_file(path: str | Path, rank: int, world: int) -> Path:
    """The part file that rank ``rank`` of ``world`` processes of a sharded run writing
    ``path`` appends to: ``<path>.part<rank>-of-<world>``.

    Args:
        path: the run's output file.
        rank: the process's rank.
        world: the number of processes.
    """
    path = Path(path)
    return path.with_name(f"{path.name}.part{rank}-of-{world}")


def part_files(path: str | Path) -> list[Path]:
    """The part files of sharded runs writing ``path`` that exist now, sorted by name (their
    ``.partial`` files are not part files).

    Args:
        path: the runs' output file.
    """
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.part\d+-of-\d+")
    return sorted(p for p in path.parent.glob(f"{glob.escape(path.name)}.part*-of-*")
                  if pattern.fullmatch(p.name))


def merge(path: str | Path, rows: Iterable[Row], key: Sequence[str]) -> int:
    """Merge a sharded run into ``path``: append the ``rows`` that ``path`` lacks (by ``key``,
    in order), then the rows it lacks from its part files (:func:`part_files`, in name order),
    and remove the part files.

    Every part is read first, by :func:`read`'s rules: a cut last line of a part is ignored
    (and set aside into the part's ``.partial`` before the part is removed); a malformed line
    anywhere else raises before anything is written or removed.

    Args:
        path: the run's output file.
        rows: the run's rows, in the order a single-process run writes them.
        key: the columns that identify a row.

    Returns:
        The number of rows appended.

    Raises:
        ResultFileError: ``path`` or a part holds a malformed line.
    """
    path = Path(path)
    parts = part_files(path)
    have = {key_of(r, key) for r in read(path, missing_ok=True)}
    from_parts = [read(p, missing_ok=True) for p in parts]
    new = []
    for row in itertools.chain(rows, *from_parts):
        k = key_of(row, key)
        if k not in have:
            have.add(k)
            new.append(row)
    if new:
        append(path, new)
    for p in parts:
        repair(p)
        p.unlink(missing_ok=True)
    return len(new)
