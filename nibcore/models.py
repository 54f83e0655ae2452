"""open_clip CLIP models, split at a transformer block.

Every attribution method in :mod:`nibcore` reaches the network through :class:`ClipModel`:
for each tower (``model.image`` and ``model.text``) it offers

* ``embed(inputs) -> e``  ``(B, N, D)`` the input embedding (patches + CLS + positions, before
  ``ln_pre``; token + positional embedding on the text side);
* ``lower(inputs, layer) -> z``  ``(B, N, D)`` the hidden state *entering* block ``layer``
  (0-based);
* ``upper(z, layer, ids=None) -> feature``  ``(B, E)`` the projected (un-normalised) feature,
  running blocks ``layer .. L-1`` and the head on ``z``.

The pooled-token floor. Only the pooled token's output of a tower's *last* block reaches the
feature (CLS on CLIP's image tower, EOT on its causal text tower, the last position on SigLIP's
text tower), so ``upper`` runs that block's query, output projection and MLP on the pooled token
alone; keys and values still cover every token, since every token of every earlier block feeds
them (so only the last block qualifies). The same function in real arithmetic; in float32 the
smaller products round differently, within :data:`nibcore.numerics.FLOAT_NOISE_RTOL` of the full
block (``tests/test_pooled_block.py``). It applies where it is exact and nothing looks inside the
block (see :meth:`Tower.pooled_query`): towers of open_clip ``ResidualAttentionBlock`` s pooled at
one token, no ``attention=`` recorder and no module hook on the last block or the head. SigLIP's
timm image tower (an attention-pool head reads every token), average-pooled towers and Hugging
Face towers keep the full block.

Every call is counted in ``model.passes`` (see :class:`PassCounter`), so pass counts are measured,
not written down.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import socket
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, text_global_pool

from .checks import check_file, check_folder, read_file, read_json_file

#: The model name that loads our bundled offline CLIP (see ``data/MINI_CLIP_CARD.md``).
MINI = "mini"
_MINI_FILES = ("mini-clip.json", "mini-clip.safetensors")


@dataclass
class PassCounter:
    """Counts the passes run through a model.

    ``forward`` / ``backward`` count *calls* (a batch of rows run together is one pass, as the
    paper counts RISE's batches); ``forward_rows`` / ``backward_rows`` count the rows (inputs) those
    calls carried. ``lower`` and ``upper`` each count as one forward call; a backward is counted
    when a gradient flows back through an ``upper`` call's output.
    """

    forward: int = 0
    backward: int = 0
    forward_rows: int = 0
    backward_rows: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(forward=self.forward, backward=self.backward,
                    forward_rows=self.forward_rows, backward_rows=self.backward_rows)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """Passes run since ``before`` (a :meth:`snapshot`)."""
        now = self.snapshot()
        return {k: now[k] - before[k] for k in now}

    def count_forward(self, rows: int) -> None:
        self.forward += 1
        self.forward_rows += rows

    def watch_backward(self, out: torch.Tensor) -> None:
        """Count one backward pass when a gradient reaches ``out``."""
        if out.requires_grad:
            rows = out.shape[0]

            def hook(grad: torch.Tensor) -> None:
                self.backward += 1
                self.backward_rows += rows

            out.register_hook(hook)


@dataclass
class AttentionRecorder:
    """Asks ``upper`` to compute the attention of some blocks explicitly and keep it.

    ``layers``: block indices to record (negative indices count from the end).
    ``isolate``: detach the input of every recorded block (as a new leaf that requires grad), so
    that a gradient of an objective computed on a block's output reaches the attention of that
    block (and of unrecorded blocks between it and the previous recorded one) but no earlier
    recorded block (LeGrad's per-layer gradients in one backward). The backward is then counted
    where every gradient passes: at the last recorded block's output.
    ``head``: also record the attention of an attention-pooling head (SigLIP's MAP head), if the
    tower has one: ``head_probs`` ``(B, heads, latents, N)``.

    After the call, for the i-th recorded block in block order: ``probs[i]`` is its attention,
    ``(B, heads, N, N)``, a non-leaf tensor with ``retain_grad()`` (``probs[i].grad`` is available
    after backward); ``parts[i]`` holds ``q``, ``k``, ``v`` ``(B, N, D)`` (all heads side by side;
    after the block's q/k norms, before the ``1/sqrt(d)`` scale), ``attended`` ``(B, N, D)`` (the
    attention output before the output projection, ``retain_grad()``) and ``out`` ``(B, N, D)``
    (the block's output).
    """

    layers: Sequence[int]
    isolate: bool = False
    head: bool = False
    probs: list[torch.Tensor] = field(default_factory=list)
    parts: list[dict[str, torch.Tensor]] = field(default_factory=list)
    head_probs: torch.Tensor | None = None


def _retain(t: torch.Tensor) -> torch.Tensor:
    if t.requires_grad:
        t.retain_grad()
    return t


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                       attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``q`` ``(B, M, D)`` over ``k``/``v`` ``(B, N, D)`` with ``heads``
    heads: ``(attended (B, M, D), probs (B, heads, M, N))``."""
    b, m, d = q.shape
    n = k.shape[1]
    qh = q.reshape(b, m, heads, d // heads).transpose(1, 2)
    kh = k.reshape(b, n, heads, d // heads).transpose(1, 2)
    vh = v.reshape(b, n, heads, d // heads).transpose(1, 2)
    scores = qh @ kh.transpose(-2, -1) / math.sqrt(d // heads)
    if attn_mask is not None:
        scores = scores + attn_mask.to(scores.dtype)
    probs = _retain(scores.softmax(dim=-1))
    attended = _retain((probs @ vh).transpose(1, 2).reshape(b, m, d))
    return attended, probs


def _block_with_attention(block: torch.nn.Module, x: torch.Tensor,
                          attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """One residual block (open_clip's ``ResidualAttentionBlock`` or timm's ViT ``Block``) with
    its attention made explicit. Numerically the same function as the block; returns
    ``(out, parts)`` with ``parts`` as described in :class:`AttentionRecorder` plus ``probs``."""
    if _is_open_clip_block(block):
        mha = block.attn
        q, k, v = F.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        attended, probs = explicit_attention(q, k, v, mha.num_heads, attn_mask)
        x = x + block.ls_1(mha.out_proj(attended))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    elif _is_timm_block(block):
        attn = block.attn
        b, n, _ = x.shape
        q, k, v = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = (t.transpose(1, 2).reshape(b, n, -1) for t in (q, k, v))
        attended, probs = explicit_attention(q, k, v, attn.num_heads, attn_mask)
        x = x + block.drop_path1(block.ls1(attn.proj(attn.norm(attended))))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    else:
        raise NotImplementedError(
            f"explicit attention is implemented for open_clip's ResidualAttentionBlock and timm's "
            f"ViT Block, not {type(block).__name__}")
    return x, dict(q=q, k=k, v=v, attended=attended, probs=probs, out=x)


def _is_open_clip_block(block: torch.nn.Module) -> bool:
    """An open_clip self-attention ``ResidualAttentionBlock`` (not a cross-attention one)."""
    return isinstance(block, ResidualAttentionBlock) and not hasattr(block, "ln_1_kv")


def _hooked(*modules: object) -> bool:
    """Whether a forward or backward hook is registered on any of ``modules`` (``nn.Module`` s;
    other objects are skipped) or their submodules, or globally on every module."""
    from torch.nn.modules import module as nn_module

    if any(getattr(nn_module, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or m._backward_pre_hooks
               for module in modules if isinstance(module, torch.nn.Module)
               for m in module.modules())


def _pooled_block(block: torch.nn.Module, x: torch.Tensor, query: torch.Tensor,
                  attn_mask: torch.Tensor | None) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock``'s output at one token per row, ``(B, D)``.

    Args:
        block: the block (see :func:`_poolable_block`).
        x: its input ``(B, N, D)``.
        query: the token ``(B,)`` of each row whose output is wanted.
        attn_mask: the block's additive attention mask ``(N, N)``, or None.

    The query, the attention's output projection and the MLP run on that token only; keys and
    values on every token. The same function as ``block(x)[rows, query]`` up to float32 rounding
    (products of other shapes). The projections are taken on ``(B, N, D)`` as laid out, not
    through ``nn.MultiheadAttention``'s sequence-first view, whose strided products run as
    one small matrix product per token (in the backward too).
    """
    mha = block.attn
    b, n, d = x.shape
    heads = mha.num_heads
    rows = torch.arange(b, device=x.device)
    query = query.to(x.device)
    h = block.ln_1(x)
    w_q, w_kv = mha.in_proj_weight.split([d, 2 * d])
    b_q, b_kv = (None, None) if mha.in_proj_bias is None else mha.in_proj_bias.split([d, 2 * d])
    q = F.linear(h[rows, query], w_q, b_q).view(b, heads, 1, d // heads)
    k, v = (t.view(b, n, heads, d // heads).transpose(1, 2)
            for t in F.linear(h, w_kv, b_kv).chunk(2, dim=-1))
    if attn_mask is not None:  # each row's query row of the mask: (B, 1, 1, N)
        attn_mask = attn_mask[query].to(x.dtype)[:, None, None, :]
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).reshape(b, d)
    token = x[rows, query] + block.ls_1(mha.out_proj(attended))
    return token + block.ls_2(block.mlp(block.ln_2(token)))


def _poolable_block(block: torch.nn.Module) -> bool:
    """An open_clip self-attention ``ResidualAttentionBlock`` whose attention
    :func:`_pooled_block` computes as ``nn.MultiheadAttention`` does: packed q/k/v weights,
    batch first, no added key/value bias or zero attention."""
    mha = getattr(block, "attn", None)
    return (_is_open_clip_block(block) and isinstance(mha, torch.nn.MultiheadAttention)
            and mha.batch_first and mha.in_proj_weight is not None and mha.bias_k is None
            and mha.bias_v is None and not mha.add_zero_attn)


def _is_timm_block(block: torch.nn.Module) -> bool:
    """A timm ViT block whose attention :func:`_block_with_attention` can make explicit."""
    attn = getattr(block, "attn", None)
    return (hasattr(block, "norm1") and hasattr(attn, "qkv") and hasattr(attn, "q_norm")
            and getattr(attn, "gate", None) is None and not hasattr(block, "attn_out_norm"))


class Tower:
    """One tower of a CLIP model, split at a block. Subclasses define embedding and head."""

    side: str
    #: tokens before the patch tokens (CLS, registers): 1 for CLIP's ViT, 0 for SigLIP's
    prefix_tokens: int = 0
    #: Private switch: run the last block on the pooled token alone where :meth:`pooled_query`
    #: allows it (the default). ``False`` on a tower (or on the class) runs every token through
    #: the last block, as nibcore did before; for tests and benchmarks only.
    _pooled_last_block: bool = True

    def __init__(self, clip: torch.nn.Module, passes: PassCounter):
        self.clip = clip
        self.passes = passes

    # --- to be defined by each tower -------------------------------------------------------
    @property
    def blocks(self) -> torch.nn.ModuleList:
        raise NotImplementedError

    @property
    def attn_mask(self) -> torch.Tensor | None:
        return None

    def mask_for(self, n_tokens: int) -> torch.Tensor | None:
        """The attention mask for a sequence of ``n_tokens`` (a prefix of the context)."""
        mask = self.attn_mask
        return None if mask is None else mask[:n_tokens, :n_tokens]

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def enter(self, e: torch.Tensor) -> torch.Tensor:
        """From the input embedding to the state entering block 0."""
        return e

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        raise NotImplementedError

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The position ``(B,)`` of the token the head pools (CLS, EOT, last), or None when the
        tower pools with an attention head (no single query token)."""
        raise NotImplementedError

    def pooled_query(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The position ``(B,)`` of the one token whose output of the last block reaches the
        feature, when :meth:`upper` may run that block on this token alone (then
        :meth:`pooled_head` takes the token); None where it must run the full block.

        None here, for towers that do not override it: SigLIP's timm image tower (its
        attention-pool head reads every token) and the Hugging Face towers (their layers run
        nibcore's own way). The open_clip towers override it and also return None for an
        average-pooled ViT, for blocks other than open_clip's ``ResidualAttentionBlock`` and
        while a module hook is registered on the last block or the head (so the hook sees what
        it saw before).

        Args:
            ids: the token ids ``(B, C)`` (text side), else None.
            batch: the number of rows ``B``.
        """
        return None

    def pooled_head(self, token: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """The head on the pooled token's output of the last block alone: ``(B, D) -> (B, E)``,
        the same function as :meth:`head` on every token (towers with a :meth:`pooled_query`).

        Args:
            token: the pooled token's output of the last block ``(B, D)``.
            ids: the token ids ``(B, C)`` (text side), else None.
        """
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def check_layer(self, layer: int) -> int:
        """Validate a block index: ``0 <= layer < n_blocks``."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"layer must be an int, got {type(layer).__name__}")
        if not 0 <= layer < self.n_blocks:
            raise ValueError(
                f"layer {layer} is out of range for the {self.side} tower, which has "
                f"{self.n_blocks} blocks: use 0 <= layer <= {self.n_blocks - 1}")
        return layer

    def run_blocks(self, x: torch.Tensor, start: int, stop: int,
                   attention: AttentionRecorder | None = None) -> torch.Tensor:
        """Run blocks ``start .. stop-1`` on ``x`` ``(B, N, D)``."""
        record = set()
        if attention is not None:
            record = {i % self.n_blocks for i in attention.layers}
        mask = self.mask_for(x.shape[1])
        for i in range(start, stop):
            block = self.blocks[i]
            if i in record:
                if attention.isolate:
                    x = x.detach().requires_grad_(True)
                x, parts = _block_with_attention(block, x, mask)
                attention.probs.append(parts.pop("probs"))
                attention.parts.append(parts)
            elif mask is None:
                x = block(x)
            else:
                x = block(x, attn_mask=mask)
        return x

    def lower(self, inputs: torch.Tensor, layer: int) -> torch.Tensor:
        """The hidden state entering block ``layer``: ``(B, N, D)``."""
        self.check_layer(layer)
        self.passes.count_forward(inputs.shape[0])
        return self.run_blocks(self.enter(self.embed(inputs)), 0, layer)

    def upper(self, z: torch.Tensor, layer: int, ids: torch.Tensor | None = None,
              attention: AttentionRecorder | None = None) -> torch.Tensor:
        """Projected feature ``(B, E)`` from the state ``z`` ``(B, N, D)`` entering block ``layer``.

        The last block runs on the pooled token alone (the pooled-token floor, see the module
        docstring) unless ``attention`` is given, a hook watches it, or the tower does not allow
        it (:meth:`pooled_query`); the same function either way, float32 rounding aside.

        Args:
            z: the hidden state entering block ``layer`` ``(B, N, D)``.
            layer: the first block to run; ``n_blocks`` runs only the head.
            ids: the token ids ``(B, C)`` (text side, for pooling at EOT).
            attention: record the attention of some blocks (every block runs every token).
        """
        if layer != self.n_blocks:  # n_blocks itself means "only the head"
            self.check_layer(layer)
        self.passes.count_forward(z.shape[0])
        query = None
        if self._pooled_last_block and attention is None and layer < self.n_blocks:
            query = self.pooled_query(ids, z.shape[0])
        if query is None:
            out = self.head(self.run_blocks(z, layer, self.n_blocks, attention), ids, attention)
        else:
            last = self.n_blocks - 1
            x = self.run_blocks(z, layer, last)
            out = self.pooled_head(
                _pooled_block(self.blocks[last], x, query, self.mask_for(x.shape[1])), ids)
        isolated = attention is not None and attention.isolate and attention.parts
        # isolated blocks: every gradient from this pass crosses the last recorded block's output
        self.passes.watch_backward(attention.parts[-1]["out"] if isolated else out)
        return out

    def from_embedding(self, e: torch.Tensor, ids: torch.Tensor | None = None,
                       attention: AttentionRecorder | None = None) -> torch.Tensor:
        """Projected feature ``(B, E)`` from an input embedding ``e`` (see :meth:`embed`)."""
        return self.upper(self.enter(e), 0, ids, attention)


class ImageTower(Tower):
    """open_clip's own ``VisionTransformer`` (CLIP): CLS first, pooled at CLS."""

    side = "image"
    prefix_tokens = 1

    @property
    def visual(self) -> torch.nn.Module:
        return self.clip.visual

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.visual.transformer.resblocks

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)

    def enter(self, e: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_pre(e)

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        pooled, _ = self.visual._pool(x)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        return torch.zeros(batch, dtype=torch.long, device=self.visual.class_embedding.device)

    def pooled_query(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """CLS when the ViT pools CLS (``pool_type="tok"``, CLIP); None for average pooling."""
        last = self.blocks[self.n_blocks - 1]
        if (getattr(self.visual, "pool_type", "tok") != "tok" or not _poolable_block(last)
                or _hooked(last, self.visual.ln_post)):
            return None
        return self.query_index(ids, batch)

    def pooled_head(self, token: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        return self.head(token[:, None], ids)  # a one-token sequence: CLS alone


def _map_head_with_attention(pool: torch.nn.Module, x: torch.Tensor,
                             attention: AttentionRecorder) -> torch.Tensor:
    """timm's ``AttentionPoolLatent`` (SigLIP's MAP head) with its attention made explicit and
    recorded in ``attention.head_probs``; numerically the same function as ``pool(x)``."""
    b, n, c = x.shape
    if pool.pos_embed is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    q = pool.q(pool.latent.expand(b, -1, -1)).reshape(b, pool.latent_len, pool.num_heads, -1)
    k, v = pool.kv(x).reshape(b, n, 2, pool.num_heads, pool.head_dim).permute(2, 0, 3, 1, 4) \
        .unbind(0)
    q, k = pool.q_norm(q.transpose(1, 2)), pool.k_norm(k)
    q, k, v = (t.transpose(1, 2).reshape(b, t.shape[2], -1) for t in (q, k, v))
    attended, attention.head_probs = explicit_attention(q, k, v, pool.num_heads, None)
    y = pool.proj_drop(pool.proj(attended))
    if pool.mlp is not None:
        y = y + pool.mlp(pool.norm(y))
    return y[:, 0] if pool.pool == "token" else y.mean(1) if pool.pool == "avg" else y


class TimmImageTower(Tower):
    """open_clip's ``TimmModel`` around a timm ``VisionTransformer`` (SigLIP, SigLIP 2): no CLS
    (``prefix_tokens`` = the trunk's, 0 for SigLIP); pooled by the trunk's head — an attention
    pool (MAP) for SigLIP — then open_clip's projection head (identity for SigLIP)."""

    side = "image"

    @property
    def trunk(self) -> torch.nn.Module:
        return self.clip.visual.trunk

    @property
    def prefix_tokens(self) -> int:  # type: ignore[override]
        return int(self.trunk.num_prefix_tokens)

    @property
    def blocks(self) -> torch.nn.Module:
        return self.trunk.blocks

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk._pos_embed(self.trunk.patch_embed(pixels))

    def enter(self, e: torch.Tensor) -> torch.Tensor:
        return self.trunk.norm_pre(self.trunk.patch_drop(e))

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        trunk = self.trunk
        x = trunk.norm(x)
        if attention is not None and attention.head and trunk.attn_pool is not None:
            if not trunk.pool_include_prefix:
                x = x[:, trunk.num_prefix_tokens:]
            x = _map_head_with_attention(trunk.attn_pool, x, attention)
            x = trunk.head(trunk.head_drop(trunk.fc_norm(x)))
        else:
            x = trunk.forward_head(x)
        return self.clip.visual.head(x)

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        trunk = self.trunk
        if trunk.attn_pool is None and trunk.global_pool == "token" and trunk.has_class_token:
            return torch.zeros(batch, dtype=torch.long, device=trunk.pos_embed.device)
        return None


class TextTower(Tower):
    """open_clip's text transformer: CLIP's built-in one, or ``CustomTextCLIP.text`` (SigLIP,
    no causal mask, pooled at the last position)."""

    side = "text"

    @property
    def module(self) -> torch.nn.Module:
        """The module holding the text tower's parts (the CLIP itself, or its ``text``)."""
        return getattr(self.clip, "text", self.clip)

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.module.transformer.resblocks

    @property
    def attn_mask(self) -> torch.Tensor | None:
        return getattr(self.module, "attn_mask", None)

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        """The token-embedding table (vocabulary × width)."""
        return self.module.token_embedding

    @property
    def positional_embedding(self) -> torch.Tensor:
        """Positional embeddings ``(C, D)``."""
        return self.module.positional_embedding

    @property
    def pool_type(self) -> str:
        return getattr(self.module, "pool_type", getattr(self.clip, "text_pool_type", "argmax"))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token + positional embedding ``(B, n, D)``; ``ids`` ``(B, n)`` may be a prefix of the
        context (see :meth:`ClipModel.trim`)."""
        e = self.token_embedding(ids)
        return e + self.positional_embedding[: ids.shape[1]].to(e.dtype)

    def head(self, x: torch.Tensor, ids: torch.Tensor | None,
             attention: AttentionRecorder | None = None) -> torch.Tensor:
        if ids is None:
            raise ValueError("the text tower needs the token ids to pool at the end-of-text token")
        m = self.module
        x = m.ln_final(x)
        eos = getattr(m, "eos_id", getattr(self.clip, "text_eos_id", None))
        return self._project(text_global_pool(x, ids, self.pool_type, eos_token_id=eos))

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text projection of the pooled, final-normed token ``(B, D) -> (B, E)``."""
        proj = self.module.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj

    def pooled_query(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """EOT under CLIP's causal mask, the last position on SigLIP's text tower (the pooled
        token's query row of the mask, if any, is applied); None without ids."""
        m, last = self.module, self.blocks[self.n_blocks - 1]
        if ids is None or not _poolable_block(last) or _hooked(last, m.ln_final,
                                                                   m.text_projection):
            return None
        return self.query_index(ids, batch)

    def pooled_head(self, token: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        return self._project(self.module.ln_final(token))

    def query_index(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if ids is None:
            raise ValueError("the text tower needs the token ids to find its pooled token")
        if self.pool_type == "argmax":
            return ids.argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long,
                              device=ids.device)
        if self.pool_type == "first":
            return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        eos = getattr(self.module, "eos_id", getattr(self.clip, "text_eos_id", None))
        if self.pool_type == "eos" and eos is not None:  # as open_clip: the first EOS position
            return (ids == eos).int().argmax(dim=-1)
        return None


def end_of_text_id(tokenizer) -> int | None:
    """The end-of-text token id a tokenizer writes: open_clip's ``SimpleTokenizer``
    (``eot_token_id``, 49407 for CLIP's BPE), open_clip's ``HFTokenizer`` or a ``transformers``
    tokenizer (``eos_token_id``: 1 for SigLIP's SentencePiece), or None when it names none."""
    for obj in (tokenizer, getattr(tokenizer, "tokenizer", None)):
        for attr in ("eot_token_id", "eos_token_id"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def padding_id(tokenizer) -> int:
    """The id a tokenizer pads with (``pad_token_id``; 0 for open_clip's ``SimpleTokenizer``)."""
    for obj in (tokenizer, getattr(tokenizer, "tokenizer", None)):
        value = getattr(obj, "pad_token_id", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def text_lengths(ids: torch.Tensor, eot_id: int | None = None, pad_id: int = 0) -> torch.Tensor:
    """Number of real tokens up to and including the end-of-text token, per row ``(B,)``.

    ``eot_id`` given: one past the first position holding it (CLIP: 49407; SigLIP's
    SentencePiece: 1, which is also its padding, so "the largest id" would be wrong); a row
    without it (truncated by a tokenizer that writes none) counts the whole context.
    ``eot_id`` None: one past the last position whose id differs from ``pad_id`` (the token
    before the padding). For CLIP's tokenizer both equal ``argmax + 1``.
    """
    n = ids.shape[-1]
    pos = torch.arange(n, device=ids.device)
    if eot_id is not None:
        first = torch.where(ids == eot_id, pos, n).min(dim=-1).values
        return (first + 1).clamp(max=n)
    return torch.where(ids != pad_id, pos, -1).max(dim=-1).values + 1


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
                and all(_is_timm_block(b) for b in trunk.blocks)):
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


# --- loading ---------------------------------------------------------------------------------

def bundled_file(name: str) -> Path:
    """A file of the bundled data: the repository's ``data/`` (clone, editable install) or the
    installed package ``nibcore._bundled`` (``pip install git+...``)."""
    candidates = [Path(__file__).resolve().parent.parent / "data" / name]
    try:
        candidates.append(Path(str(resources.files("nibcore._bundled") / name)))
    except (ModuleNotFoundError, TypeError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"bundled file {name!r} not found (looked in {', '.join(map(str, candidates))}); "
        "reinstall nibcore from the repository, or clone it")


def build_clip(model_cfg: dict, image_size: int | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, name: str = "custom",
               state_dict: dict | None = None) -> ClipModel:
    """A :class:`ClipModel` from an open_clip ``CLIP`` config dict (``embed_dim``,
    ``vision_cfg``, ``text_cfg``, ...), randomly initialised unless ``state_dict`` is given."""
    clip = open_clip.model.CLIP(**model_cfg)
    if state_dict is not None:
        clip.load_state_dict({k: v.float() for k, v in state_dict.items()})
    size = image_size or clip.visual.image_size
    size = size if isinstance(size, int) else size[0]
    mean = tuple(mean or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(std or open_clip.OPENAI_DATASET_STD)
    preprocess = open_clip.transform.image_transform(size, is_train=False, mean=mean, std=std)
    context = model_cfg.get("text_cfg", {}).get("context_length", 77)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    return ClipModel(clip, preprocess, tokenizer, name, mean, std)


def load_mini(folder: str | Path | None = None) -> ClipModel:
    """The bundled ``mini`` model, or a snapshot of it in ``folder`` (``mini-clip.json`` +
    ``mini-clip.safetensors``, as written by :mod:`nibcore.world.train`)."""
    from safetensors.torch import load_file

    def find(name: str) -> Path:
        return bundled_file(name) if folder is None else \
            check_folder(folder, "mini model folder") / name

    cfg = read_json_file(find(_MINI_FILES[0]), "mini model config")
    weights = read_file(find(_MINI_FILES[1]), "mini model weights", lambda p: load_file(str(p)),
                        "a .safetensors file of the mini model's tensors")
    return build_clip(cfg["model_cfg"], cfg.get("image_size"), cfg.get("mean"), cfg.get("std"),
                      name=MINI, state_dict=weights)


def _looks_like_path(pretrained: str) -> bool:
    return any(s in pretrained for s in ("/", "\\")) or pretrained.endswith(
        (".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def network_available(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether ``host`` (where open_clip downloads weights from) can be reached."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_error(name: str, pretrained: str, cause: str) -> RuntimeError:
    return RuntimeError(
        f"could not download the {pretrained!r} weights of {name} ({cause}). Without network "
        f"access, pass a local checkpoint file with pretrained='/path/to/weights.pt' or use "
        f"load_model('mini'), our bundled offline model.")


def cached_weights(name: str, pretrained: str, cache_dir: str | Path | None = None) -> Path | None:
    """The weights file of open_clip tag ``pretrained`` for ``name`` if an earlier download left it
    in open_clip's cache (the Hugging Face hub cache, or ``~/.cache/clip`` for plain URLs; both
    under ``cache_dir`` when given), else None. Reads the disk only."""
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = cfg["hf_hub"].rstrip("/"), ""
        if not cfg["hf_hub"].endswith("/"):
            repo, filename = repo.rsplit("/", 1)
        filename = filename or HF_WEIGHTS_NAME
        names = [filename]
        if filename == HF_WEIGHTS_NAME:
            names.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for candidate in names:
            hit = try_to_load_from_cache(repo, candidate,
                                         cache_dir=None if cache_dir is None else str(cache_dir))
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    if cfg.get("url"):
        folder = Path(cache_dir) if cache_dir is not None else Path("~/.cache/clip").expanduser()
        path = folder / Path(cfg["url"]).name
        if path.is_file():
            return path
    return None


def _load_weights(clip: torch.nn.Module, path: Path, name: str) -> None:
    """Load a checkpoint file into ``clip``; a one-line error naming the file and what was
    expected when it cannot be read or does not fit the architecture."""
    from open_clip.factory import load_checkpoint, load_state_dict

    expected = f"an open_clip state dict of {name}"

    def read(p: Path) -> dict:
        state = load_state_dict(str(p))
        if not isinstance(state, dict) or not state or not all(
                isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError("it holds no tensors")
        return state

    state = read_file(path, "checkpoint", read,
                      f"{expected} (saved by torch.save, or .safetensors)")
    own = clip.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    try:
        load_checkpoint(clip, str(path))
    except Exception as err:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape, e.g. {k} "
                         f"{tuple(state[k].shape)} instead of {tuple(own[k].shape)}")
        what = "; ".join(parts) or f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        raise ValueError(f"checkpoint {path} does not fit {name} ({what}); expected {expected}"
                         f" — is it the weights of another architecture?") from None


@contextlib.contextmanager
def _quiet_random_init_warning(active: bool):
    """Hide open_clip's "initialized randomly" log line when we load the weights ourselves."""
    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    if active:
        root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_model(name: str = MINI, pretrained: str | None = None,
               device: str | torch.device | None = None,
               cache_dir: str | Path | None = None, tokenizer=None) -> ClipModel:
    """Load a CLIP model as a :class:`ClipModel`.

    ``name``: ``"mini"`` (our bundled offline model) or any open_clip model name (e.g.
    ``"ViT-B-32"``; for OpenAI weights ``"ViT-B-32-quickgelu"`` matches their architecture).
    ``pretrained``: ``None`` (random weights), an open_clip tag such as ``"openai"`` (downloads
    when online; offline, weights already in open_clip's cache are used) or a local checkpoint
    path (a state dict saved by ``torch.save`` or a ``.safetensors`` file).
    ``device``: defaults to CUDA when available, else CPU. ``cache_dir``: open_clip's download
    cache (default: the Hugging Face hub cache, ``~/.cache/clip`` for plain URLs).
    ``name`` may also be a Hugging Face ``transformers.CLIPModel`` / ``SiglipModel`` or a local
    folder saved with its ``save_pretrained`` (see :mod:`nibcore.hf`; needs
    ``pip install nibcore[hf]``); ``tokenizer``: a SigLIP model's tokenizer when its folder has
    none (Hugging Face models only).
    """
    from .hf import is_hf_source, load_hf  # the optional Hugging Face stack

    if is_hf_source(name):
        if pretrained is not None:
            raise ValueError("a Hugging Face model carries its own weights: leave pretrained=None")
        return load_hf(name, device, tokenizer)
    if tokenizer is not None:
        raise ValueError("tokenizer= is for Hugging Face SigLIP models; open_clip models come with "
                         "their own tokenizer")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if name == MINI:
        if pretrained is not None:
            raise ValueError("the bundled 'mini' model has its own weights: leave pretrained=None")
        return load_mini().to(device)
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known + [MINI], n=3)
        raise ValueError(f"unknown model name {name!r}; did you mean {close}? "
                         f"Use 'mini' or a name from open_clip.list_models().")
    checkpoint, options = None, {}
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained is not None and (_looks_like_path(pretrained) or (
            pretrained not in tags and Path(pretrained).expanduser().exists())):
        checkpoint = check_file(pretrained, "checkpoint")
    elif pretrained is not None:
        if pretrained not in tags:
            raise ValueError(f"unknown pretrained tag {pretrained!r} for {name}; "
                             f"known tags: {tags}, or pass a local checkpoint path")
        if not network_available():
            checkpoint = cached_weights(name, pretrained, cache_dir)
            if checkpoint is None:
                where = cache_dir or "the Hugging Face hub cache and ~/.cache/clip"
                raise _offline_error(name, pretrained, f"no network: huggingface.co is "
                                     f"unreachable, and no earlier download is in {where}")
            cfg = open_clip.get_pretrained_cfg(name, pretrained)  # the tag's preprocessing
            options = {f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation",
                                                      "resize_mode") if cfg.get(k)}
    try:
        with _quiet_random_init_warning(checkpoint is not None):
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None if checkpoint is not None else pretrained, device="cpu",
                cache_dir=None if cache_dir is None else str(cache_dir), **options)
    except Exception as err:  # network errors come in many types (OSError, HF hub, urllib)
        if pretrained is None or checkpoint is not None:
            raise
        raise _offline_error(name, pretrained, f"{type(err).__name__}: {err}") from err
    if checkpoint is not None:
        _load_weights(clip, checkpoint, name)
    clip = clip.to(device)
    label = name if pretrained is None else f"{name}:{Path(pretrained).name}"
    return ClipModel(clip, preprocess, open_clip.get_tokenizer(name), label,
                     getattr(clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN,
                     getattr(clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
