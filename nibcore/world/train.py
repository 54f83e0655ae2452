"""Deterministic training of the bundled mini CLIP on :mod:`nibcore.world.scenes`.

    python -m nibcore.world.train --out data/ [--steps N --threads 1 --seed 0 --run-dir DIR]

Every step draws its batch from ``(seed, step)`` alone, and checkpoints hold the model, optimiser,
schedule and torch RNG state, so a run resumes bit-identically from ``DIR/ckpt.pt`` (same thread
count and ``--steps`` required). ``--export-only`` writes the latest checkpoint to ``--out``
without training. ``--run-dir`` (default ``runs/mini`` under the working folder) holds the
checkpoint and ``log.txt``.

Loss = symmetric InfoNCE between scene images and their captions (captions naming the same object
set count as matches; object order shuffled) + a per-phrase loss: every image is scored against all
``len(COLOURS) * len(SHAPES)`` "a <colour> <shape>" phrases with a sigmoid (present / absent).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file

from ..downloads import file_digest
from . import cues, scenes

CONTEXT_LENGTH = 20
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {
        "image_size": scenes.IMAGE_SIZE,
        "patch_size": 8,
        "width": 128,
        "layers": 6,
        "head_width": 32,
    },
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": 49408,
        "width": 128,
        "heads": 2,
        "layers": 4,
    },
    "quick_gelu": False,
}
MEAN: tuple[float, float, float] = tuple(OPENAI_DATASET_MEAN)
STD: tuple[float, float, float] = tuple(OPENAI_DATASET_STD)
DEFAULT_RUN_DIR = Path("runs") / "mini"


def build_model() -> open_clip.model.CLIP:
    """A freshly initialised mini CLIP (uses the torch RNG)."""
    return open_clip.model.CLIP(**MODEL_CFG)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 normalised as the eval transform does."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


#: The training worlds: the scenes (the bundled ``mini``), and the cue world of
#: :mod:`nibcore.world.cues` with the glyph tied to the caption (``cues``) or independent of it
#: (``cues-control``).
WORLDS = ("scenes", "cues", "cues-control")


def make_batch(
    seed: int, step: int, batch: int, world: str = "scenes"
) -> tuple[np.ndarray, list[str], list[frozenset[str]]]:
    """Training batch for ``step``: images (B, S, S, 3) uint8, captions, object sets."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose one of {list(WORLDS)}")
    rng = np.random.default_rng([seed, step])
    seeds = scenes.TRAIN_SEEDS if world == "scenes" else cues.TRAIN_SEEDS
    idx = rng.integers(0, len(seeds), size=batch)
    images, captions, sets = [], [], []
    for i in idx:
        if world == "scenes":
            img, _, _, colours, shapes = scenes.render(scenes.TRAIN_SEEDS[int(i)])
            objs = [f"{c} {s}" for c, s in zip(colours, shapes)]
        else:
            scene = cues.training_scene(int(i), tied=world == "cues")
            img, objs = np.array(scene.image), [scene.phrase]
        order = rng.permutation(len(objs))
        images.append(img)
        captions.append(scenes.caption_of([objs[j] for j in order]))
        sets.append(frozenset(objs))
    return np.stack(images), captions, sets


def _param_groups(
    model: torch.nn.Module, extra: list[torch.nn.Parameter], wd: float
) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2] + extra
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, peak: float, warmup_frac: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 0."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def losses(
    model: open_clip.model.CLIP,
    phrase_head: torch.Tensor,
    images: torch.Tensor,
    caption_tokens: torch.Tensor,
    sets: list[frozenset[str]],
    phrase_tokens: torch.Tensor,
    phrase_list: list[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(contrastive loss, per-phrase loss); ``phrase_head`` = [scale, bias] of the phrase
    sigmoid."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(torch.cat([caption_tokens, phrase_tokens])), dim=-1)
    cap, phr = txt[: len(sets)], txt[len(sets) :]
    scale = model.logit_scale.exp()
    logits = scale * img @ cap.T
    same = torch.tensor([[a == b for b in sets] for a in sets], dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    contrastive = 0.5 * (
        torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
        + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
    )
    present = torch.tensor([[p in s for p in phrase_list] for s in sets], dtype=torch.float32)
    phrase_logits = phrase_head[0] * img @ phr.T + phrase_head[1]
    phrase = F.binary_cross_entropy_with_logits(phrase_logits, present) * len(phrase_list) / 3
    return contrastive, phrase


#: The files each world's model is exported to, ``<stem>.json`` and ``<stem>.safetensors``: the
#: bundled models' files (:data:`nibcore.models.BUNDLED`).
STEMS = {"scenes": "mini-clip", "cues": "cue-clip", "cues-control": "cue-control-clip"}


def export(model: open_clip.model.CLIP, out: Path, steps: int, seed: int, threads: int,
           world: str = "scenes") -> str:
    """Write ``out/<stem>.safetensors`` (fp16) and ``out/<stem>.json`` (:data:`STEMS`: the
    world's); return the sha256 of the weights."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    stem = STEMS[world]
    path = out / f"{stem}.safetensors"
    save_file(state, str(path))
    sha = file_digest(path)
    meta = {
        "model_cfg": MODEL_CFG,
        "mean": list(MEAN),
        "std": list(STD),
        "image_size": scenes.IMAGE_SIZE,
        "context_length": CONTEXT_LENGTH,
        "sha256": sha,
        "threads": threads,
        "seed": seed,
        "steps": steps,
        **({} if world == "scenes" else {"world": world}),
    }
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return sha


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "ckpt.pt"
    model = build_model()
    phrase_head = torch.nn.Parameter(torch.tensor([10.0, -5.0]))
    opt = torch.optim.AdamW(
        _param_groups(model, [phrase_head], args.wd), lr=args.lr, betas=(0.9, 0.98), eps=1e-6
    )
    step = 0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        phrase_head.data.copy_(ck["phrase_head"])
        opt.load_state_dict(ck["opt"])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
        saved = {"world": "scenes", **ck["args"]}  # checkpoints before --world were scenes
        if any(saved[k] != getattr(args, k) for k in ("threads", "seed", "world")):
            raise ValueError("resume needs the same --threads, --seed and --world as the "
                             "checkpoint")
        print(f"resumed at step {step}", flush=True)
    if args.export_only:
        sha = export(model, Path(args.out), step, args.seed, args.threads, args.world)
        print(f"exported step {step} sha256 {sha}", flush=True)
        return
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=CONTEXT_LENGTH)
    phrase_list = scenes.phrases()
    phrase_tokens = tokenizer([f"a {p}" for p in phrase_list])
    model.train()
    t0 = time.time()
    with open(run_dir / "log.txt", "a") as log:
        while step < args.steps:
            lr = lr_at(step, args.steps, args.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            imgs, caps, sets = make_batch(args.seed, step, args.batch, args.world)
            con, phr = losses(
                model,
                phrase_head,
                to_tensor(imgs),
                tokenizer(caps),
                sets,
                phrase_tokens,
                phrase_list,
            )
            loss = con + args.phrase_weight * phr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + [phrase_head], 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            if step % 10 == 0 or step == args.steps:
                msg = (
                    f"step {step} loss {loss.item():.4f} con {con.item():.4f} "
                    f"phr {phr.item():.4f} lr {lr:.2e} t {time.time() - t0:.0f}s"
                )
                print(msg, flush=True)
                log.write(msg + "\n")
                log.flush()
            if step % args.save_every == 0 or step == args.steps:
                ck = {
                    "model": model.state_dict(),
                    "phrase_head": phrase_head.detach().clone(),
                    "opt": opt.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    "args": vars(args),
                }
                torch.save(ck, run_dir / "ckpt.tmp")
                (run_dir / "ckpt.tmp").replace(ckpt_path)
    model.eval()
    sha = export(model, Path(args.out), step, args.seed, args.threads, args.world)
    print(f"exported step {step} sha256 {sha}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--phrase-weight", type=float, default=1.0)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--world", default="scenes", choices=WORLDS,
                   help="scenes (the bundled mini), or the cue world: cues (glyph tied to the "
                   "caption) / cues-control (glyph independent); pair with its own --out and "
                   "--run-dir (the files in --out are named after the world, STEMS)")
    train(p.parse_args())


if __name__ == "__main__":
    main()
