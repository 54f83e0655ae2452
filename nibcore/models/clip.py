"""``ClipModel``: an open_clip CLIP with its preprocessing and tokenizer, split at any block."""

from __future__ import annotations

from typing import Callable, Sequence

import open_clip
import torch

from .blocks import PassCounter, is_timm_block
from .towers import (ImageTower, TextTower, TimmImageTower, Tower, end_of_text_id, padding_id,
                     text_lengths)


def _unsupported(clip: torch.nn.Module) -> str | None:
    """Why ``clip`` cannot be split by :class:`ClipModel`, or None."""
    name = type(clip).__name__
    if not isinstance(clip, (open_clip.model.CLIP, open_clip.model.CustomTextCLIP)):
        return f"{name} is not an open_clip CLIP or CustomTextCLIP"
    visual = clip.visual
    if isinstance(visual, open_clip.transformer.VisionTransformer):
        if getattr(visual, "attn_pool", None) is not None:
            return f"{name}'s ViT pools with an attentional pooler (CoCa-style), not supported"
    elif type(visual).__name__ == "TimmModel":
        trunk = visual.trunk
        if not (hasattr(trunk, "patch_embed") and hasattr(trunk, "_pos_embed")
                and all(is_timm_block(b) for b in trunk.blocks)):
            return (f"its timm image tower {type(trunk).__name__} is not a plain timm "
                    f"VisionTransformer")
    else:
        return (f"its image tower {type(visual).__name__} is not a ViT (ResNet towers have no "
                f"blocks)")
    text = getattr(clip, "text", None)
    if text is not None and (not hasattr(text, "transformer") or
                             getattr(text, "cls_emb", None) is not None):
        return f"its text tower {type(text).__name__} is not open_clip's TextTransformer " \
               f"without a CLS embedding (Hugging Face text towers and CoCa are not supported)"
    return None


class ClipModel:
    """An open_clip CLIP with its preprocessing and tokenizer, split-able at any block.

    Attributes: ``clip`` (the open_clip model, eval mode, parameters frozen), ``preprocess``
    (PIL image -> normalised tensor ``(3, H, W)``), ``tokenizer``, ``image`` / ``text`` towers,
    ``passes`` (a :class:`PassCounter`), ``eot_id`` / ``pad_id`` (the tokenizer's end-of-text and
    padding ids; ``eot_id`` may be given for a tokenizer that does not name it).
    """

    def __init__(self, clip: torch.nn.Module, preprocess: Callable, tokenizer, name: str = "custom",
                 mean: Sequence[float] = open_clip.OPENAI_DATASET_MEAN,
                 std: Sequence[float] = open_clip.OPENAI_DATASET_STD,
                 eot_id: int | None = None):
        problem = _unsupported(clip)
        if problem:
            raise TypeError(
                f"ClipModel supports open_clip CLIP models with a ViT image tower (OpenAI-style "
                f"CLIP: ViT-B-32, ViT-B-16, ...) and SigLIP / SigLIP 2 (CustomTextCLIP with a timm "
                f"ViT and open_clip's text transformer); not this model: {problem}.")
        self.clip = clip.eval().requires_grad_(False).float()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.eot_id = end_of_text_id(tokenizer) if eot_id is None else int(eot_id)
        self.pad_id = padding_id(tokenizer)
        self.name = name
        self.mean, self.std = tuple(mean), tuple(std)  # of the preprocessing's normalisation
        self.passes = PassCounter()
        timm_tower = type(self.clip.visual).__name__ == "TimmModel"
        self.image = (TimmImageTower if timm_tower else ImageTower)(self.clip, self.passes)
        self.text = TextTower(self.clip, self.passes)

    def __repr__(self) -> str:
        return (f"ClipModel({self.name!r}, image {self.image_size[0]}x{self.image_size[1]}, grid "
                f"{self.grid[0]}x{self.grid[1]}, blocks image={self.image.n_blocks} "
                f"text={self.text.n_blocks}, context={self.context_length}, device={self.device})")

    # --- geometry -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def to(self, device: str | torch.device) -> "ClipModel":
        self.clip.to(device)
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.clip.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(int(s) for s in size)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``: 7x7 for ViT-B/32 at 224 px."""
        if isinstance(self.image, TimmImageTower):
            return tuple(int(g) for g in self.image.trunk.patch_embed.grid_size)
        return tuple(self.clip.visual.grid_size)

    @property
    def context_length(self) -> int:
        return int(self.text.attn_mask.shape[0]) if self.text.attn_mask is not None else \
            int(self.text.positional_embedding.shape[0])

    def tower(self, side: str) -> Tower:
        if side not in ("image", "text"):
            raise ValueError(f"side must be 'image' or 'text', got {side!r}")
        return self.image if side == "image" else self.text

    # --- text ---------------------------------------------------------------------------------
    def text_problem(self, text: str) -> str | None:
        """Why ``text`` cannot be tokenized for this model (empty, or longer than the context),
        or None when it fits."""
        n = len(self.tokenizer.encode(text)) if hasattr(self.tokenizer, "encode") else None
        if not text.strip() or n == 0:
            return "empty text: give a caption with at least one word"
        if n is not None and n + 2 > self.context_length:
            return (f"text is {n} tokens long, but this model's context holds "
                    f"{self.context_length - 2} (+ start/end tokens): shorten {text[:40]!r}...")
        return None

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, C)``; raises on empty text or text longer than the context."""
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be strings, got {type(t).__name__}")
            problem = self.text_problem(t)
            if problem:
                raise ValueError(problem)
        return self.tokenizer(list(texts)).to(self.device)

    def text_length(self, ids: torch.Tensor) -> torch.Tensor:
        """Number of real tokens up to and including EOT per row ``(B,)`` (SOT..EOT for CLIP),
        from this model's tokenizer's end-of-text id (see :func:`text_lengths`)."""
        return text_lengths(ids, self.eot_id, self.pad_id)

    def trim(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` cut after the longest text's EOT ``(B, T_max)``.

        Exact for CLIP's causal text tower: no position attends to a later one, so the padding
        after EOT never changes the pooled feature; it only costs time.
        """
        if self.text.attn_mask is None:
            return ids
        return ids[:, : int(self.text_length(ids).max())]

    def token_strings(self, ids: torch.Tensor) -> list[str]:
        """The strings of the real tokens SOT..EOT of one row ``(C,)``."""
        n = int(self.text_length(ids[None])[0])
        decoder = getattr(self.tokenizer, "decoder", None)
        hf = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps one
        if decoder is None and hasattr(hf, "convert_ids_to_tokens"):
            return [s.replace("\u2581", "") for s in hf.convert_ids_to_tokens(ids[:n].tolist())]
        out = []
        for i in ids[:n].tolist():
            s = decoder[i] if decoder is not None else str(i)
            if hasattr(self.tokenizer, "byte_decoder"):
                s = bytearray(self.tokenizer.byte_decoder[c] for c in s).decode("utf-8", "replace")
            out.append(s.replace("</w>", ""))
        return out

    # --- whole towers -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image features ``(B, E)`` from normalised pixels ``(B, 3, H, W)``."""
        return self.image.from_embedding(self.image.embed(pixels))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Projected text features ``(B, E)`` from token ids ``(B, C)``."""
        return self.text.from_embedding(self.text.embed(ids), ids)
