"""Evaluation datasets: (image, text) pairs read from local folders, and our synthetic scenes.

A dataset is any object with ``len(ds)``, ``ds[i] -> Pair`` and iteration (see
:class:`PairDataset`); images are loaded lazily, one pair at a time.

=====================  =====================================================================
name                   what
=====================  =====================================================================
``"cc"``               Conceptual Captions: a csv with ``caption`` and ``file_path`` columns
``"imagenet"``         Tiny-ImageNet-200 validation, first 5 images per class × 200 classes
``"flickr8k"``         Flickr8k, Karpathy val split, one caption per image (best cosine; needs
                       ``model=``)
``"scenes"``           held-out synthetic scenes with object masks (ground truth)
``"scenes_text"``      held-out scenes captioned with one present + one absent object
=====================  =====================================================================

Real datasets are not bundled. Put them under ``root`` (default: ``$NIB_DATA/<folder>``, with
``$NIB_DATA`` defaulting to ``~/nib-data``); a missing folder raises ``FileNotFoundError`` that
says what to put where. On Colab, ``download_tiny_imagenet``, ``download_flickr8k`` and
``download_conceptual_captions`` fetch public copies (resumable, checksummed where a checksum is
published, with progress bars; see :mod:`nibcore.downloads`). The tests run them against a local
server holding archives in the real layouts (``scripts/make_fixtures.py``).
"""

from __future__ import annotations

import csv
import importlib
import importlib.metadata
import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from .checks import (check_file, check_folder, check_output_folder, open_image, read_json_file,
                     read_text_file)
from .downloads import DownloadError, extract_zip, fetch, fetch_many


#: Default sub-folder of the data root for each dataset.
FOLDERS = {"cc": "conceptual_captions", "imagenet": "tiny-imagenet-200", "flickr8k": "flickr8k"}
ALIASES = {"conceptual_captions": "cc", "tiny_imagenet": "imagenet",
           "tiny-imagenet-200": "imagenet", "flickr": "flickr8k"}

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FLICKR8K_IMAGES_URL = ("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
                       "Flickr8k_Dataset.zip")
KARPATHY_SPLITS_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
CC_VALIDATION_TSV_URL = ("https://storage.googleapis.com/gcc-data/Validation/"
                         "GCC-1.1.0-Validation.tsv")


@dataclass
class Pair:
    """One (image, text) pair. ``id`` is unique within its dataset; ``meta`` carries extras
    (for scenes: ``mask``, ``masks``, ``objects``, ...)."""

    image: Image.Image
    text: str
    id: str
    meta: dict[str, Any] = field(default_factory=dict)


class PairDataset:
    """A sized, indexable, iterable collection of :class:`Pair` s, built lazily by ``make(i)``."""

    def __init__(self, name: str, size: int, make: Callable[[int], Pair], root: Path | None = None,
                 info: dict[str, Any] | None = None):
        self.name, self._size, self._make, self.root = name, size, make, root
        self.info = info or {}

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i: int) -> Pair:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if not -self._size <= i < self._size:
            raise IndexError(f"index {i} out of range for {self.name} ({self._size} pairs)")
        return self._make(int(i) % self._size)

    def __iter__(self) -> Iterator[Pair]:
        for i in range(self._size):
            yield self[i]

    def __repr__(self) -> str:
        where = f", root={str(self.root)!r}" if self.root else ""
        return f"PairDataset({self.name!r}, {self._size} pairs{where})"


def data_root() -> Path:
    """``$NIB_DATA`` or ``~/nib-data``: where real datasets are looked for by default."""
    return Path(os.environ.get("NIB_DATA", "~/nib-data")).expanduser()


def _root(name: str, root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else data_root() / FOLDERS[name]


def _missing(what: str, path: Path, expected: str, source: str,
             helper: str | None) -> FileNotFoundError:
    hint = f" On Colab, `nibcore.datasets.{helper}()` downloads it." if helper else ""
    return FileNotFoundError(
        f"{what} not found: expected {path}. Put {expected} there (or pass root=..., or set "
        f"$NIB_DATA). Public source: {source}.{hint}")


def _need(what: str, path: Path, expected: str, source: str, helper: str | None,
          folder: bool = False) -> Path:
    """``path`` checked (:func:`~nibcore.checks.check_file` / ``check_folder``); nothing there
    raises :func:`_missing`'s ``FileNotFoundError``, which says where to get it."""
    if not path.exists():
        raise _missing(what, path, expected, source, helper)
    return check_folder(path, what) if folder else check_file(path, what)


def _open_rgb(path: Path, what: str = "image") -> Image.Image:
    return open_image(path, what).convert("RGB")


# --- Conceptual Captions ---------------------------------------------------------------------

def conceptual_captions(root: str | Path | None = None, csv_file: str | None = None,
                        limit: int | None = None) -> PairDataset:
    """Conceptual Captions pairs from a csv with ``caption`` and ``file_path`` columns.

    ``root``: the folder holding the csv (``csv_file``, or its only ``*.csv``); relative
    ``file_path`` s are resolved against it. ``limit``: keep the first rows only (the paper used
    about 2000 pairs; its sample is not published). ``id`` = the ``file_path``.
    """
    root = _root("cc", root)
    source = ("Google's Conceptual Captions (ai.google.com/research/ConceptualCaptions): the "
              "validation TSV of caption/URL pairs; fetch the images yourself")
    expected = "a csv with columns caption,file_path and the image files it names"
    _need("Conceptual Captions folder", root, expected, source, "download_conceptual_captions",
          folder=True)
    if csv_file is None:
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise _missing("Conceptual Captions csv" if not found else
                           f"a single csv ({len(found)} found; pass csv_file=)", root / "*.csv",
                           expected, source, "download_conceptual_captions")
        path = found[0]
    else:
        path = _need("Conceptual Captions csv", root / csv_file, expected, source,
                     "download_conceptual_captions")
    reader = csv.DictReader(io.StringIO(read_text_file(path, "Conceptual Captions csv"),
                                        newline=""))
    missing = {"caption", "file_path"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}; "
                         f"it has {reader.fieldnames}")
    rows = [(r["caption"].strip(), r["file_path"].strip()) for r in reader]
    if limit is not None:
        rows = rows[:limit]

    def make(i: int) -> Pair:
        caption, file_path = rows[i]
        image_path = Path(file_path) if Path(file_path).is_absolute() else root / file_path
        return Pair(_open_rgb(image_path, f"image (row {i} of {path.name})"), caption,
                    file_path, {"row": i})

    return PairDataset("cc", len(rows), make, root, {"csv": str(path)})


# --- Tiny-ImageNet-200 -----------------------------------------------------------------------

def tiny_imagenet(root: str | Path | None = None, per_class: int = 5,
                  prompt: str = "a photo of a ") -> PairDataset:
    """Tiny-ImageNet-200 validation as the paper used it ("ImageNet"): the first ``per_class``
    images of each class (in ``val_annotations.txt`` order), classes sorted by wnid, captioned
    ``prompt + words.txt entry`` (the full synonym string, e.g. "a photo of a Egyptian cat").

    ``root``: the ``tiny-imagenet-200`` folder (``words.txt``, ``val/val_annotations.txt``,
    ``val/images/``). ``id`` = the image file name; ``meta``: ``wnid``, ``label`` (class index).
    """
    root = _root("imagenet", root)
    ann = root / "val" / "val_annotations.txt"
    words_file = root / "words.txt"
    for needed in (ann, words_file):
        _need("Tiny-ImageNet-200 file", needed, "the unzipped tiny-imagenet-200 folder (words.txt, "
              "val/images, val/val_annotations.txt)", TINY_IMAGENET_URL, "download_tiny_imagenet")
    words = {}
    for line in read_text_file(words_file, "Tiny-ImageNet-200 file").splitlines():
        if "\t" in line:
            wnid, text = line.split("\t", 1)
            words[wnid.strip()] = text.strip()
    by_class: dict[str, list[str]] = {}
    for line in read_text_file(ann, "Tiny-ImageNet-200 file").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            by_class.setdefault(parts[1].strip(), []).append(parts[0].strip())
    items = []
    for label, wnid in enumerate(sorted(by_class)):
        if wnid not in words:
            raise ValueError(f"class {wnid} of {ann} has no entry in {words_file}")
        for filename in by_class[wnid][:per_class]:
            items.append((filename, wnid, label))

    def make(i: int) -> Pair:
        filename, wnid, label = items[i]
        return Pair(_open_rgb(root / "val" / "images" / filename), prompt + words[wnid], filename,
                    {"wnid": wnid, "label": label})

    prompts = [prompt + words[wnid] for wnid in sorted(by_class)]
    return PairDataset("imagenet", len(items), make, root,
                       {"classes": len(by_class), "class_prompts": prompts})


# --- Flickr8k --------------------------------------------------------------------------------

_FLICKR_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images", "")


def flickr8k(root: str | Path | None = None, model=None, split: str = "val",
             json_file: str = "dataset_flickr8k.json") -> PairDataset:
    """Flickr8k, Karpathy ``split`` (val: 1000 images), one caption per image: of its (up to) five
    captions, the one with the highest cosine to *that* image under ``model`` (captions too long
    for the model's context are skipped). The choice is made lazily per image and cached.

    ``root``: a folder with ``dataset_flickr8k.json`` and the images (in ``Flicker8k_Dataset/``,
    ``Flickr8k_Dataset/``, ``Images/`` or the folder itself). ``id`` = the file name; ``meta``:
    ``captions`` (all of them), ``caption_index``, ``cosines``.
    """
    if model is None:
        raise ValueError("flickr8k needs model=: each image's caption is the one the model "
                         "scores highest against that image")
    root = _root("flickr8k", root)
    path = root / json_file
    source = (f"Karpathy's splits ({KARPATHY_SPLITS_URL}, file dataset_flickr8k.json) and the "
              f"Flickr8k images ({FLICKR8K_IMAGES_URL})")
    _need("Flickr8k split file", path, "dataset_flickr8k.json and the image folder", source,
          "download_flickr8k")
    split_file = read_json_file(path, "Flickr8k split file")
    if not isinstance(split_file, dict) or not isinstance(split_file.get("images"), list):
        raise ValueError(f"Flickr8k split file {path} holds no 'images' list: is it Karpathy's "
                         f"dataset_flickr8k.json?")
    images = [im for im in split_file["images"] if im.get("split") == split]
    folder = next((root / d for d in _FLICKR_IMAGE_DIRS
                   if images and (root / d / images[0]["filename"]).is_file()), None)
    if images and folder is None:
        raise _missing("Flickr8k images", root / _FLICKR_IMAGE_DIRS[0],
                       "the Flickr8k .jpg files", source, "download_flickr8k")
    cache: dict[int, Pair] = {}

    def make(i: int) -> Pair:
        if i not in cache:
            cache[i] = _best_caption_pair(model, images[i], folder)
        return cache[i]

    return PairDataset("flickr8k", len(images), make, root, {"split": split})


def _best_caption_pair(model, entry: dict, folder: Path) -> Pair:
    import torch

    from .base import cosine
    from .inputs import prepare_images

    image = _open_rgb(folder / entry["filename"])
    captions = [s["raw"].strip() for s in entry["sentences"]]
    fits = [j for j, c in enumerate(captions) if model.text_problem(c) is None]
    if not fits:
        raise ValueError(f"no caption of {entry['filename']} fits the model's context")
    with torch.no_grad():
        img = model.encode_image(prepare_images(model, image))
        txt = model.encode_text(model.tokenize([captions[j] for j in fits]))
        cos = cosine(txt, img.expand_as(txt)).cpu().numpy()
    best = fits[int(np.argmax(cos))]
    cosines = [float("nan")] * len(captions)
    for j, c in zip(fits, cos.tolist()):
        cosines[j] = c
    return Pair(image, captions[best], entry["filename"],
                {"captions": captions, "caption_index": best, "cosines": cosines})


# --- by name ---------------------------------------------------------------------------------

#: Loaders by name: ``loader(root, **kw) -> PairDataset``. The real datasets are here; others
#: come from the ``nibcore.datasets`` entry points (:func:`provided_datasets`) or
#: :func:`register_dataset`.
LOADERS: dict[str, Callable[..., PairDataset]] = {
    "cc": conceptual_captions, "imagenet": tiny_imagenet, "flickr8k": flickr8k}
#: The entry-point group through which an installed package provides datasets (the synthetic
#: world's scenes come this way, declared in ``pyproject.toml``: the library never names it).
ENTRY_POINTS = "nibcore.datasets"


def provided_datasets() -> dict[str, importlib.metadata.EntryPoint]:
    """The datasets installed packages provide, by name (their loaders are imported on use)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}


def register_dataset(name: str, loader: Callable[..., PairDataset]) -> None:
    """Make ``load_dataset(name, root, **kw)`` call ``loader(root, **kw)``."""
    LOADERS[name] = loader


def dataset_names() -> list[str]:
    """Every name :func:`load_dataset` accepts (aliases aside)."""
    return list(dict.fromkeys([*LOADERS, *provided_datasets()]))


def load_dataset(name: str, root: str | Path | None = None, **kw: Any) -> PairDataset:
    """A dataset by name (see the module docstring); ``kw`` go to its loader
    (``model=`` for flickr8k; ``n=``, ``n_objects=``, ``caption=`` for scenes)."""
    key = ALIASES.get(name, name)
    if key not in LOADERS:
        provided = provided_datasets()
        if key not in provided:
            raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()} (the "
                             f"scenes come with nibcore's own install: reinstall it if missing)")
        register_dataset(key, provided[key].load())
    return LOADERS[key](root, **kw)


# --- downloads (network; for Colab; tested against a local server) ----------------------------

#: Published checksums of the downloaded files (as listed by dataset packages that fetch the same
#: addresses); ``None``: none published. Override per call with ``checksums={name: ...}``.
CHECKSUMS: dict[str, str | None] = {
    "tiny-imagenet-200.zip": "md5:90528d7ca1a48142e341f4ef8d21d0de",
    "Flickr8k_Dataset.zip": "md5:f18a1e2920de5bd84dae7cf08ec78978",
    "caption_datasets.zip": "md5:4fa8c08369d22fe16e41dc124bd1adc2",
    "GCC-1.1.0-Validation.tsv": None,
}


def _source(url: str, base_url: str | None) -> tuple[str, str]:
    """(address, file name): the public address, or the same file name under ``base_url``."""
    name = url.rsplit("/", 1)[1]
    return (url if base_url is None else f"{base_url.rstrip('/')}/{name}"), name


def _checksum_of(name: str, checksums: dict[str, str | None] | None) -> str | None:
    table = {**CHECKSUMS, **(checksums or {})}
    return table.get(name)


def download_tiny_imagenet(root: str | Path | None = None, *, base_url: str | None = None,
                           checksums: dict[str, str | None] | None = None,
                           timeout: float = 60, progress: bool = True) -> Path:
    """Download and unzip Tiny-ImageNet-200 (~250 MB) so that ``tiny_imagenet(root)`` finds it;
    returns the ``tiny-imagenet-200`` folder. Needs the network (Colab).

    ``base_url``: a mirror holding ``tiny-imagenet-200.zip`` (default: Stanford's address);
    ``checksums``: override :data:`CHECKSUMS`. An interrupted download resumes; the folder
    appears only when the whole archive was extracted; the archive is deleted afterwards.
    Failures raise :class:`nibcore.downloads.DownloadError` (one line: what, and what to do).
    """
    folder = _root("imagenet", root)
    if (folder / "val" / "val_annotations.txt").is_file():
        return folder
    check_output_folder(folder.parent, "data folder")
    if folder.exists():
        raise DownloadError(f"{folder} exists but lacks val/val_annotations.txt (an incomplete "
                            f"copy?) — remove it and run again")
    url, name = _source(TINY_IMAGENET_URL, base_url)
    archive = fetch(url, folder.parent / name, checksum=_checksum_of(name, checksums),
                    timeout=timeout, progress=progress)
    extract_zip(archive, folder, inner="tiny-imagenet-200",
                needed=["words.txt", "val/val_annotations.txt", "val/images"])
    archive.unlink()
    return folder


def download_flickr8k(root: str | Path | None = None, *, base_url: str | None = None,
                      checksums: dict[str, str | None] | None = None,
                      timeout: float = 60, progress: bool = True) -> Path:
    """Download Karpathy's split file and the Flickr8k images (~1 GB, a public mirror) so that
    ``flickr8k(root, model=...)`` finds them; returns the folder. Needs the network (Colab).

    ``base_url``: a mirror holding ``caption_datasets.zip`` and ``Flickr8k_Dataset.zip``. Same
    guarantees as :func:`download_tiny_imagenet`.
    """
    folder = check_output_folder(_root("flickr8k", root), "Flickr8k folder")
    folder.mkdir(parents=True, exist_ok=True)
    split = folder / "dataset_flickr8k.json"
    if not split.is_file():
        url, name = _source(KARPATHY_SPLITS_URL, base_url)
        archive = fetch(url, folder / name, checksum=_checksum_of(name, checksums),
                        timeout=timeout, progress=progress)
        try:
            with zipfile.ZipFile(archive) as z:
                member = next((m for m in z.namelist() if m.endswith("dataset_flickr8k.json")),
                              None)
                if member is None:
                    raise DownloadError(f"{archive} holds no dataset_flickr8k.json — is it "
                                        f"Karpathy's caption_datasets.zip?")
                data = z.read(member)
        except (zipfile.BadZipFile, EOFError, zlib.error) as err:
            archive.unlink()
            raise DownloadError(f"{archive} is not a complete zip archive "
                                f"({type(err).__name__}: {err}) — it was deleted; run again to "
                                f"download it afresh") from None
        tmp = split.with_name(split.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(split)
        archive.unlink()
    if not any((folder / d).is_dir() for d in _FLICKR_IMAGE_DIRS[:-1]):
        url, name = _source(FLICKR8K_IMAGES_URL, base_url)
        archive = fetch(url, folder / name, checksum=_checksum_of(name, checksums),
                        timeout=timeout, progress=progress)
        extract_zip(archive, folder / _FLICKR_IMAGE_DIRS[0], inner=_FLICKR_IMAGE_DIRS[0],
                    members=lambda m: not m.startswith("__MACOSX/"))
        archive.unlink()
    return folder


def download_conceptual_captions(root: str | Path | None = None, n: int = 2000, *,
                                 base_url: str | None = None, tsv_url: str | None = None,
                                 checksums: dict[str, str | None] | None = None,
                                 timeout: float = 10, workers: int = 16,
                                 progress: bool = True) -> Path:
    """Fetch the first ``n`` *reachable* images of the Conceptual Captions validation TSV
    (caption<TAB>url, no header) and write ``captions.csv`` (``caption,file_path``) next to
    them; returns the folder. Needs the network (Colab). Not the paper's sample (unpublished).

    Many links are dead: images are fetched ``workers`` at a time with a ``timeout`` each, in
    TSV order windows until ``n`` arrived; a link that answers 404, times out or serves no
    image is skipped (a summary line counts them). Images already on disk are kept, so a re-run
    only fetches what is missing; the result is the first ``n`` reachable rows whatever the
    order replies come in. ``base_url``: a mirror of the TSV (``tsv_url``: its full address).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    folder = check_output_folder(_root("cc", root), "Conceptual Captions folder")
    images = check_output_folder(folder / "images", "Conceptual Captions image folder")
    images.mkdir(parents=True, exist_ok=True)
    url, name = _source(CC_VALIDATION_TSV_URL, base_url)
    url = tsv_url or url
    tsv = fetch(url, folder / name, checksum=_checksum_of(name, checksums),
                timeout=max(timeout, 60), progress=progress)
    rows = []
    for line in tsv.read_text(encoding="utf-8").splitlines():
        caption, _, link = line.partition("\t")
        if caption.strip() and link.strip():
            rows.append((caption.strip(), link.strip()))
    ok: list[int] = []
    failures: dict[str, int] = {}
    start = 0
    while len(ok) < n and start < len(rows):
        stop = min(len(rows), start + max(2 * (n - len(ok)), workers))
        todo = [j for j in range(start, stop) if not (images / f"{j:06d}.jpg").is_file()]
        ok += [j for j in range(start, stop) if j not in todo]
        results = fetch_many([(rows[j][1], _image_saver(images / f"{j:06d}.jpg")) for j in todo],
                             workers=workers, timeout=timeout, progress=progress,
                             desc=f"CC images {start}-{stop - 1}")
        for j, reason in zip(todo, results):
            if reason is None:
                ok.append(j)
            else:
                key = reason.split(":")[0]
                failures[key] = failures.get(key, 0) + 1
        start = stop
    chosen = sorted(ok)[:n]
    if not chosen:
        raise DownloadError(f"no image of {url} could be fetched ({_counts(failures)}) — check "
                            f"the network")
    tmp = folder / "captions.csv.part"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["caption", "file_path"])
        writer.writerows((rows[j][0], f"images/{j:06d}.jpg") for j in chosen)
    tmp.replace(folder / "captions.csv")
    short = f" (only {len(chosen)} of the {n} asked for)" if len(chosen) < n else ""
    skipped = f": {_counts(failures)}" if failures else ""
    print(f"Conceptual Captions: {len(chosen)} pairs in {folder}{short}; "
          f"{sum(failures.values())} dead links skipped{skipped}")
    return folder


def _counts(failures: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in sorted(failures.items(), key=lambda kv: -kv[1]))


def _image_saver(target: Path) -> Callable[[bytes], None]:
    def save(data: bytes) -> None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                rgb = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(f"not an image: {type(err).__name__}") from None
        tmp = target.with_name(target.name + ".part")
        rgb.save(tmp, format="JPEG", quality=95)
        tmp.replace(target)
    return save


__all__ = ["Pair", "PairDataset", "dataset_names", "load_dataset", "conceptual_captions",
           "tiny_imagenet", "flickr8k", "data_root", "register_dataset", "CHECKSUMS",
           "download_tiny_imagenet", "download_flickr8k", "download_conceptual_captions"]
