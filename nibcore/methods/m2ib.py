"""M2IB (Wang et al. 2023): a per-pair information bottleneck on one tower, the main baseline."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, cosine, register
from ..checks import check_layer_param, check_number, check_positive_int, check_seed
from ..models import ClipModel
from .common import block_output_layer, generator, split_state


def gaussian_capacity(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-element ``KL(N(mu, sigma²) ‖ N(0, 1))``."""
    return 0.5 * (sigma ** 2 + mu ** 2 - 1) - torch.log(sigma)


@register
class M2IB(Method):
    """Multi-modal information bottleneck attribution (Wang et al., NeurIPS 2023,
    https://arxiv.org/abs/2312.17174).

    At the hidden state ``z`` ``(B, N, D)`` of ``layer`` (all tokens, all channels), a mask
    ``λ = sigmoid(α)`` with ``α`` initialised to 5 per element and per pair; the bottleneck output
    is ``λ z + (1 − λ) ε``, ``ε ~ N(0, 1)``, with ``n_samples`` noise draws per step. Loss per pair
    ``β · mean KL(N(λz, (1−λ)²) ‖ N(0, 1)) − mean_draws cosine(feature, other modality's
    feature)``, minimised with Adam (``lr``) for ``num_steps`` steps (pairs optimised
    independently: the loss is the sum of per-pair losses). Image and text maps are separate
    optimisations (one call per side).

    Raw per token ``(B, N)``: the per-element KL ("capacity") of the last forward pass summed over
    channels (mean over the draws, which is the same analytic value for every draw).

    Args:
        beta: weight β of the capacity term (M2IB's 0.1).
        layer: index of the block whose *input* is the bottleneck. ``None``: the output of block
            9 of 12 as M2IB (``layer = 10`` on ViT-B/32; ``default_layer(tower) + 1`` kept two
            blocks below the top: see ``block_output_layer``).
        num_steps: Adam steps (10). Deprecated name: ``steps``.
        lr: Adam's learning rate (1.0).
        n_samples: noise draws per step (10).
        seed: seed of the noise, drawn from a local generator on the inputs' device: a call is
            reproducible for the same batch; different seeds give different maps.

    Passes per call (any B; each step runs ``B · n_samples`` rows in one call):
    ``2 + num_steps`` forward (other modality's feature, ``lower``, one ``upper`` per step) and
    ``num_steps`` backward.
    """

    name = "m2ib"
    renamed = {"steps": "num_steps"}

    def __init__(self, *, beta: float = 0.1, layer: int | None = None, num_steps: int = 10,
                 lr: float = 1.0, n_samples: int = 10, seed: int = 0) -> None:
        check_number("beta", beta, low=0)
        check_layer_param(layer)
        check_positive_int("num_steps", num_steps)
        check_number("lr", lr, low=0, low_open=True)
        check_positive_int("n_samples", n_samples)
        check_seed(seed)
        self.beta, self.layer, self.num_steps = beta, layer, num_steps
        self.lr, self.n_samples, self.seed = lr, n_samples, seed

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        tower, layer, z, pool_ids, target = split_state(
            model, pixels, ids, side, block_output_layer(model.tower(side), self.layer))
        b, k = z.shape[0], self.n_samples
        gen = generator(z.device, self.seed)
        alpha = torch.full_like(z, 5.0, requires_grad=True)
        optimiser = torch.optim.Adam([alpha], lr=self.lr)
        rep_ids = None if pool_ids is None else pool_ids.repeat(k, 1)
        rep_target = target.repeat(k, 1)
        for _ in range(self.num_steps):
            optimiser.zero_grad()
            with torch.enable_grad():
                lam = torch.sigmoid(alpha)
                mu, sigma = lam * z, 1 - lam
                kl = gaussian_capacity(mu, sigma)                     # (B, N, D)
                noise = torch.randn((k,) + tuple(z.shape), generator=gen, device=z.device,
                                    dtype=z.dtype)
                out = (mu + sigma * noise).reshape(k * b, *z.shape[1:])  # draw-major rows
                sim = cosine(tower.upper(out, layer, rep_ids), rep_target).view(k, b)
                loss = self.beta * kl.mean(dim=(1, 2)) - sim.mean(dim=0)  # (B,)
                loss.sum().backward()
            optimiser.step()
        raw = kl.detach().sum(dim=-1)
        return RawResult(raw=raw, extras={"layer": layer, "similarity": sim.detach().mean(dim=0)})
