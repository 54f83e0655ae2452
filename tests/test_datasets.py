"""Dataset loaders on tiny fixture folders, and the synthetic-scene datasets."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nibcore.datasets import Pair, conceptual_captions, flickr8k, load_dataset, tiny_imagenet
from nibcore.world import scenes
from nibcore.world.data import scene_pairs


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, 255 - value, 7)).save(path)


def test_conceptual_captions(tmp_path):
    _img(tmp_path / "images" / "a.jpg", 10)
    _img(tmp_path / "images" / "b.png", 200)
    (tmp_path / "captions.csv").write_text(
        'caption,file_path\n"a dog, running",images/a.jpg\na cat,images/b.png\n')
    ds = conceptual_captions(tmp_path)
    assert len(ds) == 2
    pairs = list(ds)
    assert [p.text for p in pairs] == ["a dog, running", "a cat"]
    assert [p.id for p in pairs] == ["images/a.jpg", "images/b.png"]
    assert isinstance(pairs[0], Pair) and pairs[1].image.mode == "RGB"
    assert pairs[1].image.getpixel((0, 0)) == (200, 55, 7)
    assert len(conceptual_captions(tmp_path, limit=1)) == 1
    assert load_dataset("conceptual_captions", tmp_path)[1].text == "a cat"
    with pytest.raises(IndexError):
        ds[2]


def test_conceptual_captions_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Conceptual Captions") as err:
        conceptual_captions(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "file_path" in str(err.value)
    (tmp_path / "x.csv").write_text("text,path\nhello,a.jpg\n")
    with pytest.raises(ValueError, match="caption"):
        conceptual_captions(tmp_path)


def _tiny_imagenet(root):
    classes = ["n02", "n01", "n03"]  # not sorted on purpose
    (root / "words.txt").parent.mkdir(parents=True)
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tEgyptian cat\n"
                                    "n03\ttabby, tabby cat\nn99\tunused\n")
    lines = []
    for j in range(21):  # 7 images per class, classes interleaved in file order
        wnid = classes[j % 3]
        name = f"val_{j}.JPEG"
        _img(root / "val" / "images" / name, j)
        lines.append(f"{name}\t{wnid}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    _tiny_imagenet(root)
    ds = tiny_imagenet(root)
    assert len(ds) == 15  # first 5 per class x 3 classes
    pairs = list(ds)
    assert [p.meta["wnid"] for p in pairs] == ["n01"] * 5 + ["n02"] * 5 + ["n03"] * 5
    assert [p.id for p in pairs[:5]] == ["val_1.JPEG", "val_4.JPEG", "val_7.JPEG", "val_10.JPEG",
                                         "val_13.JPEG"]
    assert pairs[0].text == "a photo of a goldfish, Carassius auratus"
    assert pairs[5].text == "a photo of a Egyptian cat"
    assert pairs[5].meta["label"] == 1
    assert pairs[0].image.getpixel((0, 0))[0] == 1
    assert len(load_dataset("imagenet", root, per_class=2)) == 6


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.zip") as err:
        tiny_imagenet(tmp_path / "tiny")
    assert "val_annotations.txt" in str(err.value)


def test_flickr8k_picks_the_best_caption_for_its_own_image(tmp_path, tiny):
    root = tmp_path / "flickr8k"
    (root / "Images").mkdir(parents=True)
    images = []
    for j in range(3):
        name = f"{j}.jpg"
        pixels = np.random.default_rng(j).integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "Images" / name)
        caps = ["a dog runs", "a cat sleeps", "two birds fly", "a red car",
                "a very long caption that cannot possibly fit in the tiny model context "
                "window at all"]
        images.append({"filename": name, "split": "train" if j == 1 else "val",
                       "sentences": [{"raw": c} for c in caps]})
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    ds = flickr8k(root, model=tiny)
    assert len(ds) == 2 and [p.id for p in ds] == ["0.jpg", "2.jpg"]
    pair = ds[1]
    fits = pair.meta["captions"][:4]
    with torch.no_grad():
        from nibcore.inputs import prepare_images
        img = tiny.encode_image(prepare_images(tiny, pair.image))
        cos = torch.nn.functional.cosine_similarity(tiny.encode_text(tiny.tokenize(fits)), img)
    assert pair.text == fits[int(cos.argmax())]
    assert np.isnan(pair.meta["cosines"][4])  # too long for the context: never chosen
    assert ds[1] is pair  # cached
    with pytest.raises(ValueError, match="model="):
        flickr8k(root)
    with pytest.raises(FileNotFoundError, match="dataset_flickr8k.json"):
        flickr8k(tmp_path / "none", model=tiny)


def test_scene_pairs():
    ds = scene_pairs(n=5)
    assert len(ds) == 5 and ds.name == "scenes"
    for i, pair in enumerate(ds):
        scene = scenes.heldout(1, start=i)[0]
        k = pair.meta["target"]
        assert pair.id == f"scene-{scene.seed}"
        assert pair.text == scene.caption_for([k]) == f"a {scene.objects[k]}"
        assert np.array_equal(pair.meta["mask"], scene.masks[k])
        assert pair.meta["masks"].shape[0] == len(pair.meta["objects"])
    assert ds[3].text == scene_pairs(n=5)[3].text  # deterministic
    full = scene_pairs(n=2, caption="all")
    assert full.name == "scenes-all"
    assert np.array_equal(full[0].meta["mask"], full[0].meta["masks"].any(0))
    with pytest.raises(ValueError):
        scene_pairs(n=2, caption="some")


def test_scene_text_pairs():
    ds = load_dataset("scenes_text", n=12)
    kinds = set()
    for pair in ds:
        m = pair.meta
        assert m["present"] in m["objects"] and m["absent"] not in m["objects"]
        assert pair.text in (f"a {m['present']} and a {m['absent']}",
                             f"a {m['absent']} and a {m['present']}")
        word = 0 if m["kind"] == "colour" else 1
        other = 1 - word
        assert m["present"].split()[other] == m["absent"].split()[other]
        assert m["present_word"] != m["absent_word"]
        assert np.array_equal(m["mask"], m["masks"][m["target"]])
        kinds.add(m["kind"])
    assert kinds == {"colour", "shape"}


def test_load_dataset_unknown():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("coco")
    with pytest.raises(ValueError, match="generated"):
        load_dataset("scenes", root="/tmp")
