"""SigLIP in the CLIP chapter: a random-weight SigLIP architecture that runs offline, and a table
of what differs from CLIP, read off the model objects.

SigLIP's own tokenizer is a SentencePiece model fetched from the Hugging Face hub, so offline the
architecture is paired with CLIP's BPE tokenizer (bundled with open_clip): its text vocabulary is
resized to CLIP's 49,408 tokens. With network access, ``nibcore.load_model("ViT-B-16-SigLIP",
"webli")`` loads the real weights and tokenizer instead.
"""

from __future__ import annotations

import copy

import open_clip
import pandas as pd
import timm
import torch

from ..models import ClipModel, TimmImageTower

#: The open_clip SigLIP the chapter builds at full size.
SIGLIP = "ViT-B-16-SigLIP"
#: The reduced trunk and text tower of :func:`random_siglip` ``(small=True)``: 8x8 patches of 8
#: pixels (as the bundled mini), 6 image blocks, 4 text blocks.
SMALL = dict(image_size=64, patch_size=8, width=128, depth=6, heads=2, text_layers=4,
             context=32)


def random_siglip(name: str = SIGLIP, small: bool = False, seed: int = 0) -> ClipModel:
    """open_clip's SigLIP ``name`` with random weights (seeded), paired with CLIP's BPE tokenizer.

    ``small``: the same architecture (timm ViT without CLS, MAP head, open_clip text tower without
    causal mask pooled at the last position, logit bias) at the reduced size :data:`SMALL`, for
    quick runs on a CPU.
    """
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    if cfg is None or "timm_model_name" not in cfg.get("vision_cfg", {}):
        raise ValueError(f"{name!r} is not an open_clip SigLIP config (timm image tower)")
    cfg.pop("custom_text", None)
    text = cfg["text_cfg"]
    for key in ("hf_tokenizer_name", "tokenizer_kwargs"):
        text.pop(key, None)
    text["vocab_size"] = open_clip.tokenizer.SimpleTokenizer().vocab_size
    trunk_kw = {}
    if small:
        s = SMALL
        cfg["embed_dim"] = s["width"]
        cfg["vision_cfg"]["image_size"] = s["image_size"]
        text.update(width=s["width"], heads=s["heads"], layers=s["text_layers"],
                    context_length=s["context"])
        trunk_kw = dict(img_size=s["image_size"], patch_size=s["patch_size"],
                        embed_dim=s["width"], depth=s["depth"], num_heads=s["heads"])
    # open_clip builds the trunk by name through timm.create_model: the reduced size is passed
    # by swapping that function for the one call (and putting it back whatever happens)
    create = timm.create_model
    torch.manual_seed(seed)
    timm.create_model = lambda model_name, **kw: create(model_name, **kw, **trunk_kw)
    try:
        clip = open_clip.model.CustomTextCLIP(**cfg)
    finally:
        timm.create_model = create
    size = cfg["vision_cfg"]["image_size"]
    mean = std = (0.5, 0.5, 0.5)  # SigLIP's normalisation
    preprocess = open_clip.transform.image_transform(size, is_train=False, mean=mean, std=std,
                                                     resize_mode="squash")
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=text["context_length"])
    label = f"{name} (random weights{', small' if small else ''}; CLIP BPE tokenizer)"
    return ClipModel(clip, preprocess, tokenizer, label, mean, std)


def architecture_table(models: dict[str, ClipModel]) -> pd.DataFrame:
    """What differs between the towers of ``models`` (column per model), read off the objects:
    image tokens and how many precede the patches, how the image and text towers pool, the text
    mask, and the logit (scale, bias)."""
    rows = {}
    for label, model in models.items():
        image, text = model.image, model.text
        patches = model.grid[0] * model.grid[1]
        pooled_by_head = image.query_index(None, 1) is None
        bias = getattr(model.clip, "logit_bias", None)
        scale = float(model.clip.logit_scale.exp())
        rows[label] = {
            "image tower": "timm ViT" if isinstance(image, TimmImageTower) else "open_clip ViT",
            "image tokens": f"{patches + image.prefix_tokens} = {patches} patches + "
                            f"{image.prefix_tokens} CLS",
            "image feature": "attention pool (MAP head, one learnt query)" if pooled_by_head
            else "CLS token",
            "image map from": f"all {patches} patch tokens" if image.prefix_tokens == 0
            else f"{patches} patch tokens (CLS dropped)",
            "text mask": "causal" if text.attn_mask is not None else "none (bidirectional)",
            "text feature": {"argmax": "EOT token", "last": "last position (padding)"}.get(
                text.pool_type, text.pool_type),
            "logit": f"{scale:.3g} · cos" + ("" if bias is None else f" + ({float(bias):.3g})"),
            "trained with": "softmax contrastive (batch-wise)" if bias is None
            else "pairwise sigmoid (the bias is its prior)",
        }
    return pd.DataFrame(rows)
