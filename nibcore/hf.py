"""Hugging Face ``transformers`` CLIP models behind nibcore's API (optional extra:
``pip install nibcore[hf]``).

``nibcore.load_model`` takes a ``transformers.CLIPModel``, or a local folder saved with
``save_pretrained`` (offline), and returns a :class:`HFClipModel`: the same towers
(``embed``/``lower``/``upper``, explicit attention, pass counting) over the Hugging Face modules,
so every method runs unchanged — the official NIB code's stack, with nibcore's API.

Text is tokenized with open_clip's CLIP BPE tokenizer, the same vocabulary as Hugging Face's
``CLIPTokenizer`` for CLIP checkpoints (a model with another vocabulary size is refused).
``SiglipModel`` is not supported through this path yet (a one-line error); load SigLIP through
open_clip (``load_model("ViT-B-16-SigLIP", ...)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch

from .models import AttentionRecorder, ClipModel, PassCounter, Tower, _explicit_attention

CLIP_VOCAB = 49408


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("Hugging Face models need the transformers package: "
                          "pip install 'nibcore[hf]'") from None
    return transformers


def _hf_layer(layer: torch.nn.Module, x: torch.Tensor,
              mask: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """A Hugging Face CLIP encoder layer with its attention explicit (pre-LN, residual)."""
    attn = layer.self_attn
    h = layer.layer_norm1(x)
    q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
    attended, probs = _explicit_attention(q, k, v, attn.num_heads, mask)
    x = x + attn.out_proj(attended)
    x = x + layer.mlp(layer.layer_norm2(x))
    return x, dict(q=q, k=k, v=v, attended=attended, probs=probs, out=x)


class _HFBlocks(Tower):
    """Runs Hugging Face encoder layers explicitly (their call signatures vary by version)."""

    def run_blocks(self, x: torch.Tensor, start: int, stop: int,
                   attention: AttentionRecorder | None = None) -> torch.Tensor:
        record = set() if attention is None else {i % self.n_blocks for i in attention.layers}
        mask = self.mask_for(x.shape[1])
        for i in range(start, stop):
            if i in record and attention.isolate:
                x = x.detach().requires_grad_(True)
            x, parts = _hf_layer(self.blocks[i], x, mask)
            if i in record:
                attention.probs.append(parts.pop("probs"))
                attention.parts.append(parts)
        return x


class HFImageTower(_HFBlocks):
    side = "image"
    prefix_tokens = 1

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.clip.vision_model.encoder.layers

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.vision_model.embeddings(pixels)

    def enter(self, e: torch.Tensor) -> torch.Tensor:
        return self.clip.vision_model.pre_layrnorm(e)

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        return self.clip.visual_projection(self.clip.vision_model.post_layernorm(x[:, 0]))

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        return torch.zeros(batch, dtype=torch.long, device=self.clip.logit_scale.device)


class HFTextTower(_HFBlocks):
    side = "text"
    pool_type = "argmax"

    def __init__(self, clip: torch.nn.Module, passes: PassCounter):
        super().__init__(clip, passes)
        n = self.positional_embedding.shape[0]
        self._mask = torch.full((n, n), float("-inf")).triu_(1)

    @property
    def module(self) -> torch.nn.Module:
        return self.clip.text_model

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.module.encoder.layers

    @property
    def attn_mask(self) -> torch.Tensor:
        """CLIP's causal mask ``(C, C)`` (0 on and below the diagonal, -inf above)."""
        return self._mask.to(self.positional_embedding.device)

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        return self.module.embeddings.token_embedding

    @property
    def positional_embedding(self) -> torch.Tensor:
        return self.module.embeddings.position_embedding.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.token_embedding(ids)
        return e + self.positional_embedding[: ids.shape[1]].to(e.dtype)

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        if ids is None:
            raise ValueError("the text tower needs the token ids to pool at the end-of-text token")
        x = self.module.final_layer_norm(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
        return self.clip.text_projection(pooled)

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if ids is None:
            raise ValueError("the text tower needs the token ids to find its pooled token")
        return ids.argmax(dim=-1)


class HFClipModel(ClipModel):
    """A Hugging Face ``transformers.CLIPModel`` with :class:`ClipModel`'s API."""

    def __init__(self, hf_model: torch.nn.Module, name: str = "hf",
                 mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD):
        transformers = _transformers()
        if type(hf_model).__name__ == "SiglipModel":
            raise TypeError("Hugging Face SiglipModel is not supported yet: load SigLIP through "
                            "open_clip, e.g. load_model('ViT-B-16-SigLIP')")
        if not isinstance(hf_model, transformers.CLIPModel):
            raise TypeError(f"expected a transformers CLIPModel, got {type(hf_model).__name__}")
        cfg = hf_model.config
        if cfg.text_config.vocab_size != CLIP_VOCAB:
            raise ValueError(f"text vocabulary of {cfg.text_config.vocab_size} tokens: nibcore "
                             f"tokenizes Hugging Face CLIP text with CLIP's BPE ({CLIP_VOCAB})")
        self.clip = hf_model.eval().requires_grad_(False).float()
        size = int(cfg.vision_config.image_size)
        self.preprocess = open_clip.transform.image_transform(size, is_train=False, mean=mean,
                                                              std=std)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=int(cfg.text_config.max_position_embeddings))
        self.eot_id, self.pad_id = self.tokenizer.eot_token_id, 0
        self.name = name
        self.mean, self.std = tuple(mean), tuple(std)
        self.passes = PassCounter()
        self.image = HFImageTower(self.clip, self.passes)
        self.text = HFTextTower(self.clip, self.passes)

    @property
    def image_size(self) -> tuple[int, int]:
        size = int(self.clip.config.vision_config.image_size)
        return size, size

    @property
    def grid(self) -> tuple[int, int]:
        cfg = self.clip.config.vision_config
        side = int(cfg.image_size) // int(cfg.patch_size)
        return side, side


def is_hf_source(source: Any) -> bool:
    """Whether ``load_model`` should hand ``source`` to :func:`load_hf`: a transformers model
    object, or a local folder holding a transformers ``config.json``."""
    if isinstance(source, torch.nn.Module):
        return type(source).__module__.startswith("transformers.")
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        config = Path(source) / "config.json"
        return config.is_file() and "model_type" in json.loads(config.read_text())
    return False


def load_hf(source: Any, device: str | torch.device | None = None) -> HFClipModel:
    """A :class:`HFClipModel` from a ``transformers.CLIPModel`` or a local folder (offline)."""
    transformers = _transformers()
    name = "hf"
    if not isinstance(source, torch.nn.Module):
        folder = Path(source)
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type == "siglip":
            raise TypeError("Hugging Face SiglipModel is not supported yet: load SigLIP through "
                            "open_clip, e.g. load_model('ViT-B-16-SigLIP')")
        if model_type != "clip":
            raise ValueError(f"{folder} holds a {model_type!r} model; expected a CLIP model "
                             f"(model_type 'clip')")
        source = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True)
        name = f"hf:{folder.name}"
        mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        model = HFClipModel(source, name, mean, std)
    else:
        model = HFClipModel(source, name)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(device)
