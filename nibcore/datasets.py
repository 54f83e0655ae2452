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
``download_conceptual_captions`` fetch public copies — they need the network, are never run by the
tests, and are provided as a convenience.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image


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


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


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
    if not root.is_dir():
        raise _missing("Conceptual Captions folder", root, expected, source,
                       "download_conceptual_captions")
    if csv_file is None:
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise _missing("Conceptual Captions csv" if not found else
                           f"a single csv ({len(found)} found; pass csv_file=)", root / "*.csv",
                           expected, source, "download_conceptual_captions")
        path = found[0]
    else:
        path = root / csv_file
        if not path.is_file():
            raise _missing("Conceptual Captions csv", path, expected, source,
                           "download_conceptual_captions")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
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
        if not image_path.is_file():
            raise FileNotFoundError(f"image {image_path} named in row {i} of {path} not found")
        return Pair(_open_rgb(image_path), caption, file_path, {"row": i})

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
        if not needed.is_file():
            raise _missing("Tiny-ImageNet-200 file", needed,
                           "the unzipped tiny-imagenet-200 folder (words.txt, val/images, "
                           "val/val_annotations.txt)", TINY_IMAGENET_URL, "download_tiny_imagenet")
    words = {}
    for line in words_file.read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            wnid, text = line.split("\t", 1)
            words[wnid.strip()] = text.strip()
    by_class: dict[str, list[str]] = {}
    for line in ann.read_text(encoding="utf-8").splitlines():
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

    return PairDataset("imagenet", len(items), make, root, {"classes": len(by_class)})


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
    if not path.is_file():
        raise _missing("Flickr8k split file", path, "dataset_flickr8k.json and the image folder",
                       source, "download_flickr8k")
    images = [im for im in json.loads(path.read_text(encoding="utf-8"))["images"]
              if im.get("split") == split]
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

    from .attribution import cosine
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
#: are added with :func:`register_dataset`.
LOADERS: dict[str, Callable[..., PairDataset]] = {
    "cc": conceptual_captions, "imagenet": tiny_imagenet, "flickr8k": flickr8k}
#: Datasets provided by a module outside the library, imported on first use (like a package's
#: entry points): the synthetic world registers its scenes, so the library never imports it.
PROVIDERS = {"scenes": "nibcore.world.data", "scenes_text": "nibcore.world.data"}
DATASETS = tuple(LOADERS) + tuple(PROVIDERS)


def register_dataset(name: str, loader: Callable[..., PairDataset]) -> None:
    """Make ``load_dataset(name, root, **kw)`` call ``loader(root, **kw)``."""
    LOADERS[name] = loader


def load_dataset(name: str, root: str | Path | None = None, **kw: Any) -> PairDataset:
    """A dataset by name (see the module docstring); ``kw`` go to its loader
    (``model=`` for flickr8k; ``n=``, ``n_objects=``, ``caption=`` for scenes)."""
    key = ALIASES.get(name, name)
    if key not in LOADERS and key in PROVIDERS:
        importlib.import_module(PROVIDERS[key])
    if key not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(set(DATASETS) | set(LOADERS))}")
    return LOADERS[key](root, **kw)


# --- downloads (network; for Colab; never run by the tests) ----------------------------------

def _fetch(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        print(f"downloading {url} -> {dest}")
        tmp = dest.with_suffix(dest.suffix + ".part")
        urllib.request.urlretrieve(url, tmp)
        tmp.rename(dest)
    return dest


def download_tiny_imagenet(root: str | Path | None = None) -> Path:
    """NETWORK, for Colab. Download and unzip Tiny-ImageNet-200 (~250 MB) so that
    ``tiny_imagenet(root)`` finds it. Returns the ``tiny-imagenet-200`` folder."""
    folder = _root("imagenet", root)
    if not (folder / "val" / "val_annotations.txt").is_file():
        archive = _fetch(TINY_IMAGENET_URL, folder.parent / "tiny-imagenet-200.zip")
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder.parent)  # the archive holds tiny-imagenet-200/
        if folder.name != "tiny-imagenet-200":
            (folder.parent / "tiny-imagenet-200").rename(folder)
    return folder


def download_flickr8k(root: str | Path | None = None) -> Path:
    """NETWORK, for Colab. Download the Flickr8k images (~1 GB, a public mirror) and Karpathy's
    split file into ``root`` so that ``flickr8k(root, model=...)`` finds them."""
    folder = _root("flickr8k", root)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "dataset_flickr8k.json").is_file():
        archive = _fetch(KARPATHY_SPLITS_URL, folder / "caption_datasets.zip")
        with zipfile.ZipFile(archive) as z:
            member = next(m for m in z.namelist() if m.endswith("dataset_flickr8k.json"))
            (folder / "dataset_flickr8k.json").write_bytes(z.read(member))
    if not any((folder / d).is_dir() for d in _FLICKR_IMAGE_DIRS[:-1]):
        archive = _fetch(FLICKR8K_IMAGES_URL, folder / "Flickr8k_Dataset.zip")
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
    return folder


def download_conceptual_captions(root: str | Path | None = None, n: int = 2000,
                                 tsv_url: str = CC_VALIDATION_TSV_URL, timeout: float = 10) -> Path:
    """NETWORK, for Colab. Fetch the first ``n`` *reachable* images of the Conceptual Captions
    validation TSV (caption<TAB>url; many URLs are dead and are skipped) and write
    ``captions.csv`` (``caption,file_path``) next to them. Not the paper's sample (unpublished)."""
    folder = _root("cc", root)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    tsv = _fetch(tsv_url, folder / "validation.tsv")
    rows = []
    with open(tsv, encoding="utf-8") as f:
        for j, line in enumerate(f):
            if len(rows) >= n:
                break
            caption, _, url = line.rstrip("\n").partition("\t")
            target = images / f"{j:06d}.jpg"
            try:
                if not target.exists():
                    with urllib.request.urlopen(url, timeout=timeout) as r:
                        data = r.read()
                    from io import BytesIO
                    Image.open(BytesIO(data)).convert("RGB").save(target, quality=95)
                rows.append((caption, f"images/{target.name}"))
            except Exception:  # dead links, non-images: skip
                continue
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["caption", "file_path"])
        w.writerows(rows)
    return folder


__all__ = ["Pair", "PairDataset", "DATASETS", "load_dataset", "conceptual_captions",
           "tiny_imagenet", "flickr8k", "data_root", "register_dataset",
           "download_tiny_imagenet", "download_flickr8k", "download_conceptual_captions"]
