"""The pieces below the towers: pass counting, attention recording, attention computed by hand
(open_clip and timm blocks), and the pooled-token last block (see :mod:`nibcore.models`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock


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


def block_with_attention(block: torch.nn.Module, x: torch.Tensor,
                          attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """One residual block (open_clip's ``ResidualAttentionBlock`` or timm's ViT ``Block``) with
    its attention made explicit. Numerically the same function as the block; returns
    ``(out, parts)`` with ``parts`` as described in :class:`AttentionRecorder` plus ``probs``."""
    if is_open_clip_block(block):
        mha = block.attn
        q, k, v = F.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        attended, probs = explicit_attention(q, k, v, mha.num_heads, attn_mask)
        x = x + block.ls_1(mha.out_proj(attended))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    elif is_timm_block(block):
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


def is_open_clip_block(block: torch.nn.Module) -> bool:
    """An open_clip self-attention ``ResidualAttentionBlock`` (not a cross-attention one)."""
    return isinstance(block, ResidualAttentionBlock) and not hasattr(block, "ln_1_kv")


def hooked(*modules: object) -> bool:
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


def pooled_block(block: torch.nn.Module, x: torch.Tensor, query: torch.Tensor,
                  attn_mask: torch.Tensor | None) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock``'s output at one token per row, ``(B, D)``.

    Args:
        block: the block (see :func:`poolable_block`).
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


def poolable_block(block: torch.nn.Module) -> bool:
    """An open_clip self-attention ``ResidualAttentionBlock`` whose attention
    :func:`pooled_block` computes as ``nn.MultiheadAttention`` does: packed q/k/v weights,
    batch first, no added key/value bias or zero attention."""
    mha = getattr(block, "attn", None)
    return (is_open_clip_block(block) and isinstance(mha, torch.nn.MultiheadAttention)
            and mha.batch_first and mha.in_proj_weight is not None and mha.bias_k is None
            and mha.bias_v is None and not mha.add_zero_attn)


def is_timm_block(block: torch.nn.Module) -> bool:
    """A timm ViT block whose attention :func:`block_with_attention` can make explicit."""
    attn = getattr(block, "attn", None)
    return (hasattr(block, "norm1") and hasattr(attn, "qkv") and hasattr(attn, "q_norm")
            and getattr(attn, "gate", None) is None and not hasattr(block, "attn_out_norm"))
