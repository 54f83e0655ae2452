#!/usr/bin/env python
"""Small copies of the paper's datasets, in exactly the layouts the real downloads have.

    python scripts/make_fixtures.py OUT [--archives DIR --base-url URL] [--checkpoint FILE]

``OUT`` receives what ``nibcore.datasets`` reads (set ``NIB_DATA=OUT``):

* ``tiny-imagenet-200/``: ``wnids.txt``, ``words.txt`` (tab-separated, more synsets than
  classes, as the real file lists all of ImageNet), ``val/val_annotations.txt`` (file, wnid,
  box), ``val/images/val_<i>.JPEG`` (64×64), plus ``train/`` and ``test/`` as in the archive;
* ``flickr8k/``: Karpathy's ``dataset_flickr8k.json`` (train/val/test split, five captions
  per image with tokens, one too long for CLIP's 77-token context), the images in
  ``Flicker8k_Dataset/`` (the archive's own spelling) and ``Flickr8k.token.txt``;
* ``conceptual_captions/``: our ``captions.csv`` (``caption,file_path``) and ``images/``, as
  :func:`nibcore.datasets.download_conceptual_captions` writes them.

``--archives DIR`` also writes what the download helpers fetch, named as on the real servers:
``tiny-imagenet-200.zip``, ``caption_datasets.zip``, ``Flickr8k_Dataset.zip`` (with the
``__MACOSX/`` entries of the real one) and ``GCC-1.1.0-Validation.tsv`` (caption<TAB>url, no
header) whose image links point to ``<base-url>/cc/`` — a few of them dead on purpose.
``--checkpoint FILE`` saves a randomly initialised open_clip model (``--model``, default
``ViT-B-32-quickgelu``; seed 0; fp16 state dict) for ``load_model(model, FILE)``.

Images are generated (smooth colour fields with a few blobs, JPEG-compressed), deterministic.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

#: (wnid, words.txt entry): real ImageNet synsets.
CLASSES = [("n01443537", "goldfish, Carassius auratus"),
           ("n01629819", "European fire salamander, Salamandra salamandra"),
           ("n02123045", "tabby, tabby cat"),
           ("n02124075", "Egyptian cat"),
           ("n02437312", "Arabian camel, dromedary, Camelus dromedarius"),
           ("n03400231", "frying pan, frypan, skillet")]
#: synsets in words.txt that are no class of the dataset (the real file lists 82115)
OTHER_SYNSETS = [("n00001740", "entity"), ("n00001930", "physical entity"),
                 ("n02084071", "dog, domestic dog, Canis familiaris")]
VAL_PER_CLASS = 5

SUBJECTS = ["a dog", "two children", "a man in a red jacket", "a woman", "a brown horse",
            "a cyclist", "a black cat", "three people"]
ACTIONS = ["runs across the grass", "stands near the water", "jumps over a fence",
           "sits on a bench", "walks along a snowy path", "plays in the sand"]
PLACES = ["in a park", "at the beach", "on a city street", "beside a lake", "in the mountains"]


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    """A photo-like picture: a smooth colour field, a horizon, a few soft blobs, grain."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    sky, ground = rng.uniform(0.2, 0.9, 3), rng.uniform(0.1, 0.7, 3)
    horizon = rng.uniform(0.3, 0.7) + 0.1 * np.sin(6 * x + rng.uniform(0, 6))
    img = np.where((y < horizon)[..., None], sky, ground) * (0.8 + 0.4 * y[..., None])
    for _ in range(rng.integers(2, 5)):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.25)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - weight) + rng.uniform(0, 1, 3) * weight
    img = img + rng.normal(0, 0.03, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def _jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


def write_tiny_imagenet(folder: Path) -> Path:
    """``folder`` = the ``tiny-imagenet-200`` directory."""
    rng = np.random.default_rng(200)
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w, _ in CLASSES))
    words = sorted(CLASSES + OTHER_SYNSETS)
    (folder / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in words))
    labels = [w for w, _ in CLASSES for _ in range(VAL_PER_CLASS)]
    rng.shuffle(labels)  # the real val set interleaves classes
    lines = []
    for i, wnid in enumerate(labels):
        _jpeg(picture(1000 + i, (64, 64)), folder / "val" / "images" / f"val_{i}.JPEG")
        x0, y0 = rng.integers(0, 30, 2)
        x1, y1 = x0 + rng.integers(20, 34), y0 + rng.integers(20, 34)
        lines.append(f"val_{i}.JPEG\t{wnid}\t{x0}\t{y0}\t{x1}\t{y1}\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    for k, (wnid, _) in enumerate(CLASSES):
        _jpeg(picture(2000 + k, (64, 64)), folder / "train" / wnid / "images" / f"{wnid}_0.JPEG")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    _jpeg(picture(3000, (64, 64)), folder / "test" / "images" / "test_0.JPEG")
    return folder


def _caption(rng: np.random.Generator) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)} ."


def write_flickr8k(folder: Path, n_val: int = 12, n_train: int = 4, n_test: int = 2) -> Path:
    """``folder`` = the flickr8k directory (split file, images, caption file)."""
    rng = np.random.default_rng(8)
    images_dir = folder / "Flicker8k_Dataset"
    images_dir.mkdir(parents=True, exist_ok=True)
    entries, tokens, sentid = [], [], 0
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        name = f"{1000268201 + 7919 * i}_{rng.integers(16 ** 10):010x}.jpg"
        w, h = (320, 240) if i % 3 else (240, 320)
        _jpeg(picture(4000 + i, (w, h)), images_dir / name)
        raws = [_caption(rng) for _ in range(5)]
        if i == n_train:  # the first val image: one caption longer than CLIP's context
            raws[0] = " ".join(["a very long caption"] * 25) + " ."
        sentences = []
        for j, raw in enumerate(raws):
            sentences.append({"tokens": raw.lower().rstrip(" .").split(), "raw": raw,
                              "imgid": i, "sentid": sentid})
            tokens.append(f"{name}#{j}\t{raw}\n")
            sentid += 1
        entries.append({"sentids": [s["sentid"] for s in sentences], "imgid": i,
                        "sentences": sentences, "split": split, "filename": name})
    (folder / "dataset_flickr8k.json").write_text(
        json.dumps({"images": entries, "dataset": "flickr8k"}))
    (folder / "Flickr8k.token.txt").write_text("".join(tokens))
    return folder


def cc_rows(n: int = 16, seed: int = 3) -> list[tuple[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    return [(_caption(rng).rstrip(" ."), picture(5000 + j, (int(rng.integers(200, 400)),
                                                            int(rng.integers(200, 400)))))
            for j in range(n)]


def write_conceptual_captions(folder: Path, n: int = 16) -> Path:
    """``folder`` = the conceptual_captions directory, as our download helper leaves it."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["caption", "file_path"])
        for j, (caption, image) in enumerate(cc_rows(n)):
            _jpeg(image.convert("RGB"), folder / "images" / f"{j:06d}.jpg")
            writer.writerow([caption, f"images/{j:06d}.jpg"])
    return folder


def write_datasets(out: Path) -> Path:
    """All three datasets under ``out`` (a ``$NIB_DATA`` folder)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tiny-imagenet-200", "flickr8k", "conceptual_captions"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    write_tiny_imagenet(out / "tiny-imagenet-200")
    write_flickr8k(out / "flickr8k")
    write_conceptual_captions(out / "conceptual_captions")
    return out


def _zip_folder(zf: zipfile.ZipFile, folder: Path, arc_root: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            zf.write(path, f"{arc_root}/{path.relative_to(folder).as_posix()}")


#: rows of the archive TSV whose links are dead: (row, what the server does)
CC_DEAD = {2: "missing", 5: "not-an-image", 9: "missing"}


def write_archives(data: Path, out: Path, base_url: str, n_cc: int = 16) -> dict[str, Path]:
    """The files the download helpers fetch, built from the datasets in ``data``; the CC images
    go to ``out/cc/`` (served as ``<base_url>/cc/...``), except the rows of :data:`CC_DEAD`
    (a missing file, or an HTML page instead of an image)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    files["tiny"] = out / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(files["tiny"], "w", zipfile.ZIP_DEFLATED) as zf:
        _zip_folder(zf, data / "tiny-imagenet-200", "tiny-imagenet-200")
    files["karpathy"] = out / "caption_datasets.zip"
    with zipfile.ZipFile(files["karpathy"], "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(data / "flickr8k" / "dataset_flickr8k.json", "dataset_flickr8k.json")
        zf.writestr("dataset_coco.json", json.dumps({"images": [], "dataset": "coco"}))
    files["flickr"] = out / "Flickr8k_Dataset.zip"
    with zipfile.ZipFile(files["flickr"], "w", zipfile.ZIP_DEFLATED) as zf:
        _zip_folder(zf, data / "flickr8k" / "Flicker8k_Dataset", "Flicker8k_Dataset")
        for path in sorted((data / "flickr8k" / "Flicker8k_Dataset").glob("*.jpg"))[:2]:
            zf.writestr(f"__MACOSX/Flicker8k_Dataset/._{path.name}", b"\x00\x05\x16\x07")
    (out / "cc").mkdir(exist_ok=True)
    lines = []
    for j, (caption, image) in enumerate(cc_rows(n_cc)):
        name = f"img{j:04d}.jpg"
        if CC_DEAD.get(j) == "not-an-image":
            (out / "cc" / name).write_text("<html><body>Image not found</body></html>")
        elif CC_DEAD.get(j) != "missing":
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="JPEG", quality=90)
            (out / "cc" / name).write_bytes(buf.getvalue())
        lines.append(f"{caption}\t{base_url.rstrip('/')}/cc/{name}\n")
    files["tsv"] = out / "GCC-1.1.0-Validation.tsv"
    files["tsv"].write_text("".join(lines), encoding="utf-8")
    return files


def write_checkpoint(path: Path, model: str = "ViT-B-32-quickgelu", seed: int = 0) -> Path:
    """A randomly initialised open_clip ``model`` (seeded), saved as an fp16 state dict."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    clip = open_clip.create_model(model, pretrained=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save({k: v.half() for k, v in clip.state_dict().items()}, tmp)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the datasets (use as $NIB_DATA)")
    parser.add_argument("--archives", type=Path, help="also write the downloadable files here")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000",
                        help="where --archives will be served (the TSV's image links)")
    parser.add_argument("--checkpoint", type=Path, help="also save a random-weight checkpoint")
    parser.add_argument("--model", default="ViT-B-32-quickgelu")
    args = parser.parse_args(argv)
    write_datasets(args.out)
    print(f"datasets in {args.out}")
    if args.archives:
        files = write_archives(args.out, args.archives, args.base_url)
        print(f"archives in {args.archives}: {', '.join(p.name for p in files.values())}")
    if args.checkpoint:
        if args.checkpoint.is_file():
            print(f"checkpoint {args.checkpoint} already there")
        else:
            write_checkpoint(args.checkpoint, args.model)
            print(f"random {args.model} checkpoint in {args.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
