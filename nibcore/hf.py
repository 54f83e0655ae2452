"""Hugging Face ``transformers`` CLIP models behind nibcore's API (optional extra:
``pip install nibcore[hf]``).

``nibcore.load_model`` takes a ``transformers.CLIPModel``, or a local folder saved with
``save_pretrained`` (offline), and returns a :class:`HFClipModel`: the same towers
(``embed``/``lower``/``upper``, explicit attention, pass counting) over the Hugging Face modules,
so every method runs unchanged — the official NIB code's stack, with nibcore's API.

``CLIPModel`` text is tokenized with open_clip's CLIP BPE tokenizer, the same vocabulary as
Hugging Face's ``CLIPTokenizer`` for CLIP checkpoints (a model with another vocabulary size is
refused).

``SiglipModel`` (SigLIP; :class:`HFSiglipModel`): no CLS (image maps from all patch tokens), an
attention-pool (MAP) head over the image tokens, a text tower without causal mask pooled at the
last position, a sigmoid logit with a bias. Its tokenizer is the model's own (SentencePiece), read
offline from the model's folder (``processor.save_pretrained(folder)``) or passed as
``tokenizer=``; texts are padded to the context with ``padding="max_length"``, as SigLIP was
trained. Images are resized to the square input without cropping, as SigLIP's image processor.
``Siglip2Model`` (variable-resolution NaFlex patches) and SigLIP towers without the MAP head are
refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F

from .models import (AttentionRecorder, ClipModel, PassCounter, Tower, end_of_text_id,
                     explicit_attention, padding_id, register_loader)

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
    attended, probs = explicit_attention(q, k, v, attn.num_heads, mask)
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


def _hf_map_head(head: torch.nn.Module, x: torch.Tensor,
                 attention: AttentionRecorder | None) -> torch.Tensor:
    """Hugging Face SigLIP's ``SiglipMultiheadAttentionPoolingHead`` with its attention explicit
    (recorded in ``attention.head_probs`` ``(B, heads, 1, N)``); the same function as
    ``head(x)``."""
    mha = head.attention
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    probe = head.probe.expand(x.shape[0], -1, -1)
    q = F.linear(probe, wq, bq)
    k, v = F.linear(x, wk, bk), F.linear(x, wv, bv)
    attended, probs = explicit_attention(q, k, v, mha.num_heads, None)
    if attention is not None:
        attention.head_probs = probs
    y = mha.out_proj(attended)
    y = y + head.mlp(head.layernorm(y))
    return y[:, 0]


class HFSiglipImageTower(_HFBlocks):
    """SigLIP's vision transformer: patch tokens only (no CLS), no pre-norm, a final LayerNorm
    and the MAP head (its pooled output is the image feature: there is no projection)."""

    side = "image"
    prefix_tokens = 0

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.clip.vision_model.encoder.layers

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.vision_model.embeddings(pixels)

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        vm = self.clip.vision_model
        x = vm.post_layernorm(x)
        if attention is not None and attention.head:
            return _hf_map_head(vm.head, x, attention)
        return vm.head(x)

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        return None  # pooled by an attention head, not at a token


class _HFClipBase(ClipModel):
    """What both Hugging Face models read off their vision config: input size and patch grid."""

    @property
    def image_size(self) -> tuple[int, int]:
        size = int(self.clip.config.vision_config.image_size)
        return size, size

    @property
    def grid(self) -> tuple[int, int]:
        cfg = self.clip.config.vision_config
        side = int(cfg.image_size) // int(cfg.patch_size)
        return side, side


class HFClipModel(_HFClipBase):
    """A Hugging Face ``transformers.CLIPModel`` with :class:`ClipModel`'s API."""

    def __init__(self, hf_model: torch.nn.Module, name: str = "hf",
                 mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD):
        transformers = _transformers()
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


class HFSiglipTextTower(HFTextTower):
    """SigLIP's text transformer: no causal mask, final LayerNorm, pooled at the last position
    (padding, with ``padding="max_length"``), then a linear head."""

    pool_type = "last"

    def __init__(self, clip: torch.nn.Module, passes: PassCounter):
        Tower.__init__(self, clip, passes)

    @property
    def attn_mask(self) -> None:
        return None

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        return self.module.head(self.module.final_layer_norm(x)[:, -1])

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        n = self.positional_embedding.shape[0] if ids is None else ids.shape[1]
        return torch.full((batch,), n - 1, dtype=torch.long,
                          device=self.positional_embedding.device)


class PaddedTokenizer:
    """A ``transformers`` tokenizer called as SigLIP is fed: ``padding="max_length"`` to the
    context, truncated; ids ``(B, C)``. ``eos_token_id`` / ``pad_token_id`` / ``tokenizer`` are
    what :class:`ClipModel` reads for end-of-text and token strings."""

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` without special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=self.context_length, return_tensors="pt")["input_ids"]


class HFSiglipModel(_HFClipBase):
    """A Hugging Face ``transformers.SiglipModel`` with :class:`ClipModel`'s API.

    ``tokenizer``: the model's ``transformers`` tokenizer (wrapped in :class:`PaddedTokenizer`),
    or a callable returning padded ids ``(B, C)`` such as open_clip's ``HFTokenizer``.
    """

    def __init__(self, hf_model: torch.nn.Module, tokenizer: Any, name: str = "hf",
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        transformers = _transformers()
        if not isinstance(hf_model, transformers.SiglipModel):
            raise TypeError(f"expected a transformers SiglipModel, got {type(hf_model).__name__}")
        cfg = hf_model.config
        if not getattr(cfg.vision_config, "vision_use_head", True):
            raise TypeError("this SiglipModel has no attention-pool head (vision_use_head=False), "
                            "so it has no image feature to explain")
        if tokenizer is None:
            raise ValueError("a Hugging Face SiglipModel needs its own tokenizer (SentencePiece): "
                             "save it in the model's folder (processor.save_pretrained) or pass "
                             "tokenizer=AutoTokenizer.from_pretrained(...)")
        context = int(cfg.text_config.max_position_embeddings)
        if isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
            if len(tokenizer) > cfg.text_config.vocab_size:
                raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the text tower's "
                                 f"vocabulary {cfg.text_config.vocab_size}: not this model's")
            tokenizer = PaddedTokenizer(tokenizer, context)
        self.clip = hf_model.eval().requires_grad_(False).float()
        size = int(cfg.vision_config.image_size)
        self.preprocess = open_clip.transform.image_transform(
            size, is_train=False, mean=mean, std=std, resize_mode="squash")
        self.tokenizer = tokenizer
        self.eot_id, self.pad_id = end_of_text_id(tokenizer), padding_id(tokenizer)
        self.name = name
        self.mean, self.std = tuple(mean), tuple(std)
        self.passes = PassCounter()
        self.image = HFSiglipImageTower(self.clip, self.passes)
        self.text = HFSiglipTextTower(self.clip, self.passes)


    @property
    def context_length(self) -> int:
        return int(self.clip.config.text_config.max_position_embeddings)


def is_hf_source(source: Any) -> bool:
    """Whether ``load_model`` should hand ``source`` to :func:`load_hf`: a transformers model
    object, or a local folder holding a transformers ``config.json``."""
    if isinstance(source, torch.nn.Module):
        return type(source).__module__.startswith("transformers.")
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        config = Path(source) / "config.json"
        return config.is_file() and "model_type" in json.loads(config.read_text())
    return False


def load_hf(source: Any, device: str | torch.device | None = None,
            tokenizer: Any = None) -> HFClipModel | HFSiglipModel:
    """A :class:`HFClipModel` / :class:`HFSiglipModel` from a ``transformers`` ``CLIPModel`` /
    ``SiglipModel`` or a local folder saved with ``save_pretrained`` (offline). ``tokenizer``:
    SigLIP's tokenizer when it is not saved in the folder (CLIP uses CLIP's BPE)."""
    transformers = _transformers()
    name = "hf"
    mean = std = None
    if not isinstance(source, torch.nn.Module):
        folder = Path(source)
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        classes = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel}
        if model_type not in classes:
            raise ValueError(f"{folder} holds a {model_type!r} model; nibcore takes Hugging Face "
                             f"CLIP ('clip') and SigLIP ('siglip') models")
        source = classes[model_type].from_pretrained(str(folder), local_files_only=True)
        name = f"hf:{folder.name}"
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean"), cfg.get("image_std")
        if model_type == "siglip" and tokenizer is None and any(
                (folder / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json",
                                                 "spiece.model")):
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder),
                                                                   local_files_only=True)
    kind = type(source).__name__
    if isinstance(source, transformers.SiglipModel):
        model = HFSiglipModel(source, tokenizer, name, mean or (0.5,) * 3, std or (0.5,) * 3)
    elif isinstance(source, transformers.CLIPModel):
        if tokenizer is not None:
            raise ValueError("a Hugging Face CLIPModel is tokenized with CLIP's BPE: leave "
                             "tokenizer=None")
        model = HFClipModel(source, name, mean or open_clip.OPENAI_DATASET_MEAN,
                            std or open_clip.OPENAI_DATASET_STD)
    else:
        raise TypeError(f"{kind} is not supported: nibcore takes Hugging Face CLIPModel and "
                        f"SiglipModel (not vision- or text-only models, nor Siglip2Model)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(device)


register_loader(is_hf_source, load_hf)
