"""Checks shared by the library, each raising one line that names what is wrong, before any
work is done.

* Parameters: a ``TypeError`` / ``ValueError`` naming the parameter and what it takes.
* Files and folders (every loader and writer of :mod:`nibcore` goes through these):

  - missing: ``FileNotFoundError``; a folder where a file is expected: ``IsADirectoryError``; a
    file where a folder is expected: ``NotADirectoryError``; not readable / not writable (a
    read-only folder): ``PermissionError`` (:func:`check_file`, :func:`check_folder`,
    :func:`check_output_file`, :func:`check_output_folder`);
  - a file that is not what its name says (an image PIL cannot open, weights torch or
    safetensors cannot read, JSON that does not parse, text that is not UTF-8): ``ValueError``
    naming the file, the reader's complaint and what was expected (:func:`read_file`,
    :func:`read_text_file`, :func:`read_json_file`, :func:`open_image`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")


def check_layer_param(value: Any) -> None:
    """``None`` (the method's default) or a non-negative int; the range is checked against the
    tower at call time (``tower.check_layer``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"layer must be None or an int, got {value!r}")
    if value < 0:
        raise ValueError(f"layer must be >= 0 (a block index), got {value}")


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A ``TypeError`` unless ``value`` is a real number, a ``ValueError`` unless it is finite and
    within the (open / closed) bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")


def check_seed(value: Any) -> None:
    """A seed: a non-negative int."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"seed must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"seed must be >= 0, got {value}")


# --- files and folders -------------------------------------------------------------------------

def describe(err: BaseException, limit: int | None = 160) -> str:
    """An exception in one line: the first line of its message (torch's multi-line
    ``weights_only`` explanation as one phrase), or its type's name when it has none.

    Args:
        err: the exception.
        limit: characters kept of a foreign message (None: all of the first line).
    """
    text = str(err).strip()
    if "Weights only load failed" in text:
        return "not a torch.save file, or damaged"
    first = text.splitlines()[0][:limit] if text else ""
    return first or type(err).__name__


def check_file(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` as a :class:`~pathlib.Path` of a readable file, or a one-line error.

    Args:
        path: the file (``~`` is expanded).
        what: what the file is, for the message (``"image"``, ``"checkpoint"``, ...).

    Raises:
        FileNotFoundError: nothing is there. IsADirectoryError: a folder is there.
        PermissionError: the file cannot be read.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder, not a file: give the path of the file "
                                f"itself")
    if not p.exists():
        above = next((q for q in p.parents if q.exists()), None)
        hint = f" (no folder {p.parent})" if above is not None and above != p.parent else ""
        raise FileNotFoundError(f"{what} file not found: {p}{hint}")
    if not p.is_file():
        raise ValueError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{what} {p} cannot be read: permission denied")
    return p


def check_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """``path`` as a :class:`~pathlib.Path` of an existing folder, or a one-line error.

    Args:
        path: the folder (``~`` is expanded).
        what: what the folder is, for the message.

    Raises:
        FileNotFoundError: nothing is there. NotADirectoryError: a file is there.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {p} is a file, not a folder")
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _check_creatable(p: Path, what: str) -> None:
    """A one-line error unless ``p`` (absent) can be created: its nearest existing ancestor is a
    writable folder (the folders in between are created by the writer)."""
    above = next((q for q in p.parents if q.exists() or q.is_symlink()), None)
    if above is None:
        return
    if not above.is_dir():
        raise NotADirectoryError(f"cannot write {what} {p}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {what} {p}: folder {above} is read-only")


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a :class:`~pathlib.Path` a file can be written to, or a one-line error; checked
    before the work whose result it will hold.

    Args:
        path: the file to write (``~`` is expanded); missing folders above it may be created.
        what: what the file is, for the message.

    Raises:
        IsADirectoryError: a folder is there. NotADirectoryError: a file is where a folder
        above it should be. PermissionError: the file or its folder is read-only.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder: give a file name, e.g. "
                                f"{p / ('out' + (p.suffix or ''))}")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise PermissionError(f"cannot write {what} {p}: the file is read-only")
        if not os.access(p.parent, os.W_OK | os.X_OK):  # written beside it, then renamed
            raise PermissionError(f"cannot write {what} {p}: folder {p.parent} is read-only")
        return p
    _check_creatable(p, what)
    return p


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a :class:`~pathlib.Path` of a folder files can be written into (existing, or
    creatable), or a one-line error.

    Args:
        path: the folder (``~`` is expanded).
        what: what the folder is, for the message.

    Raises:
        NotADirectoryError: a file is there (or above it). PermissionError: read-only.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {p} is a file, not a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write into {what} {p}: the folder is read-only")
        return p
    _check_creatable(p, what)
    return p


def write_error(err: OSError, path: str | os.PathLike, what: str) -> OSError:
    """A one-line error of the same kind for a write of ``what`` to ``path`` that failed anyway
    (disk full, a folder made read-only meanwhile).

    Args:
        err: the error the write raised.
        path: the file written.
        what: what the file is, for the message.
    """
    return type(err)(f"cannot write {what} {Path(path).expanduser()}: "
                     f"{err.strerror or describe(err)}")


def read_file(path: str | os.PathLike, what: str, reader: Callable[[Path], T],
              expected: str) -> T:
    """``reader(path)`` for a checked file; whatever the reader raises on a file that is not what
    it should be becomes one ``ValueError`` naming the file, the reader's complaint and what was
    expected.

    Args:
        path: the file.
        what: what the file is (``"checkpoint"``, ``"image"``, ...).
        reader: reads and returns the file's content; raises on bad content.
        expected: what a good file holds, for the message (``"a PNG or JPEG image"``).
    """
    p = check_file(path, what)
    try:
        return reader(p)
    except MemoryError:
        raise
    except Exception as err:  # readers raise many types for a damaged file
        raise ValueError(f"{what} {p} cannot be read ({describe(err)}); expected "
                         f"{expected}") from None


def read_text_file(path: str | os.PathLike, what: str = "text file") -> str:
    """The UTF-8 text of a file, or a one-line error (see :func:`check_file`; ``ValueError`` when
    it is not UTF-8 text).

    Args:
        path: the file.
        what: what the file is, for the message.
    """
    p = check_file(path, what)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {p} is not UTF-8 text ({err.reason} at byte {err.start}): is it "
                         f"the right file? Save it as UTF-8") from None


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed JSON of a UTF-8 file, or a one-line error (``ValueError`` when it does not
    parse).

    Args:
        path: the file.
        what: what the file is, for the message.
    """
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {Path(path).expanduser()} is not valid JSON ({err.msg} at line "
                         f"{err.lineno}, column {err.colno})") from None


def open_image(path: str | os.PathLike, what: str = "image"):
    """A decoded ``PIL.Image.Image`` from a file (read now, so a damaged file fails here), or a
    one-line error (``ValueError`` when PIL cannot read it).

    Args:
        path: the image file.
        what: what the file is, for the message.
    """
    from PIL import Image

    def decode(p: Path) -> Image.Image:
        with Image.open(p) as im:
            im.load()
            return im

    return read_file(path, what, decode, "an image file PIL can open (PNG, JPEG, ...)")
