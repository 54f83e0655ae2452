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
The package, by concern: :mod:`~nibcore.models.blocks` (pass counting, attention by hand, the
pooled-token block), :mod:`~nibcore.models.towers` (the towers), :mod:`~nibcore.models.clip`
(:class:`ClipModel`), :mod:`~nibcore.models.loading` (:func:`load_model` and its loaders).
"""

from .blocks import AttentionRecorder, PassCounter, explicit_attention
from .clip import ClipModel
from .loading import (BUNDLED, MINI, bundled_file, build_clip, cached_weights, load_bundled,
                      load_model, network_available, register_loader)
from .towers import (ImageTower, TextTower, TimmImageTower, Tower, end_of_text_id, padding_id,
                     text_lengths)

__all__ = ["BUNDLED", "MINI", "AttentionRecorder", "ClipModel", "ImageTower", "PassCounter",
           "TextTower", "TimmImageTower", "Tower", "build_clip", "bundled_file", "cached_weights",
           "end_of_text_id", "explicit_attention", "load_bundled", "load_model",
           "network_available", "padding_id", "register_loader", "text_lengths"]
