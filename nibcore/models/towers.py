"""The towers: one tower of a CLIP model split at a block (embedding, lower, upper, head), for
open_clip's ViT, timm's ViT and open_clip's text transformer; the text ids' helpers."""

from __future__ import annotations


import torch
from open_clip.transformer import text_global_pool

from .blocks import (AttentionRecorder, PassCounter, block_with_attention, explicit_attention,
                     hooked, pooled_block, poolable_block)


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
                x, parts = block_with_attention(block, x, mask)
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
                pooled_block(self.blocks[last], x, query, self.mask_for(x.shape[1])), ids)
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
        if (getattr(self.visual, "pool_type", "tok") != "tok" or not poolable_block(last)
                or hooked(last, self.visual.ln_post)):
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
        if ids is None or not poolable_block(last) or hooked(last, m.ln_final,
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
