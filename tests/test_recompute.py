"""Independent recomputations of every method's defining formula on the tiny model.

Nothing here goes through nibcore's tower split (``lower`` / ``upper`` / ``embed`` /
``from_embedding``) or its method code: states are read and replaced with forward pre-hooks on
open_clip's own modules, and each method is written out from its definition (its class docstring
and paper) in plain torch, then compared with :func:`nibcore.explain`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noise import assert_paths_close
import nibcore
from nibcore.methods.common import rise_grids, rise_masks

TEXT = "a red circle and a blue ring"


# --- plain open_clip access ------------------------------------------------------------------

@contextmanager
def replaced_input(module: torch.nn.Module, value):
    """Within the block, ``module`` receives ``value`` (a tensor, or a function of the input it
    would have received) as its first positional input."""
    def hook(_, args):
        new = value(args[0]) if callable(value) else value
        return (new,) + tuple(args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def captured_input(module: torch.nn.Module, run) -> torch.Tensor:
    """The first positional input ``module`` receives while ``run()`` executes (no grad)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return seen[0]


def blocks(model, side):
    clip = model.clip
    return clip.visual.transformer.resblocks if side == "image" else clip.transformer.resblocks


def features(model, pixels, ids, side):
    """The explained tower's features (open_clip's own encode)."""
    return model.clip.encode_image(pixels) if side == "image" else model.clip.encode_text(ids)


def target(model, pixels, ids, side):
    """The other modality's constant feature."""
    with torch.no_grad():
        return features(model, pixels, ids, "text" if side == "image" else "image")


def inputs(tiny, picture, text=TEXT):
    return tiny.preprocess(picture)[None], tiny.tokenize([text])


def n_tokens(tiny, ids):
    return int((ids[0] != 0).sum())


# --- NIB -------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["image", "text"])
def test_nib_paper_schedule(tiny, picture, side):
    """raw_i = Σ_c z_ic · (1/n) Σ_k ∂f/∂z̃_ic(k/n · z), f = cosine with the other feature; the
    state z enters block ``layer``; text side over the full context (NIB trims it exactly)."""
    pixels, ids = inputs(tiny, picture)
    layer, n = 1, 5
    block = blocks(tiny, side)[layer]
    other = target(tiny, pixels, ids, side)
    z = captured_input(block, lambda: features(tiny, pixels, ids, side))
    grads = torch.zeros_like(z)
    for k in range(1, n + 1):
        scaled = (k / n * z).requires_grad_(True)
        with replaced_input(block, scaled):
            f = F.cosine_similarity(features(tiny, pixels, ids, side), other)
        (g,) = torch.autograd.grad(f.sum(), scaled)
        grads += g / n
    with torch.no_grad(), replaced_input(block, torch.zeros_like(z)):
        f0 = float(F.cosine_similarity(features(tiny, pixels, ids, side), other))
    with torch.no_grad():
        f1 = float(F.cosine_similarity(features(tiny, pixels, ids, side), other))
    expected = (z * grads).sum(-1)[0]
    if side == "text":
        expected = expected[: n_tokens(tiny, ids)]
    a = nibcore.explain(tiny, picture, TEXT, side=side, layer=layer, num_steps=n)
    assert_paths_close(a.raw, expected.numpy(), rtol=1e-4)
    assert_paths_close((a.f1, a.f0), (f1, f0))


# --- M2IB ------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["image", "text"])
def test_m2ib_adam_steps(tiny, picture, side):
    """A few Adam steps on α (λ = sigmoid(α), α₀ = 5) of β·mean KL − mean_draws cosine, the noise
    drawn per step as one ``(n_samples, B, N, D)`` normal tensor from a generator seeded with
    ``seed``; raw = the last step's KL summed over channels."""
    pixels, ids = inputs(tiny, picture)
    layer, beta, lr, k, steps, seed = 2, 0.3, 0.5, 3, 3, 7
    block = blocks(tiny, side)[layer]
    other = target(tiny, pixels, ids, side)
    z = captured_input(block, lambda: features(tiny, pixels, ids, side))
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.full_like(z, 5.0, requires_grad=True)
    adam = torch.optim.Adam([alpha], lr=lr)
    rep_pixels, rep_ids = pixels.repeat(k, 1, 1, 1), ids.repeat(k, 1)
    for _ in range(steps):
        adam.zero_grad()
        lam = torch.sigmoid(alpha)
        mu, sigma = lam * z, 1 - lam
        kl = 0.5 * (sigma ** 2 + mu ** 2 - 1) - torch.log(sigma)
        noise = torch.randn((k,) + tuple(z.shape), generator=gen)
        with replaced_input(block, (mu + sigma * noise).reshape(k * z.shape[0], *z.shape[1:])):
            sim = F.cosine_similarity(features(tiny, rep_pixels, rep_ids, side), other.repeat(k, 1))
        loss = beta * kl.mean() - sim.mean()
        loss.backward()
        adam.step()
    expected = kl.detach().sum(-1)[0]
    if side == "text":
        expected = expected[: n_tokens(tiny, ids)]
    a = nibcore.explain(tiny, picture, TEXT, method="m2ib", side=side, layer=layer, beta=beta,
                        lr=lr, n_samples=k, num_steps=steps, seed=seed)
    np.testing.assert_allclose(a.raw, expected.numpy(), rtol=1e-4, atol=1e-5)


# --- Grad-CAM --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["paper", "classic"])
@pytest.mark.parametrize("side", ["image", "text"])
def test_gradcam(tiny, picture, side, variant):
    """g = ∂logit/∂z at the input of block ``layer``; paper: ReLU(Σ_c g ⊙ z); classic:
    ReLU(Σ_c mean_i(g_i) z), the mean over patch tokens (image) or SOT..EOT (text)."""
    pixels, ids = inputs(tiny, picture)
    layer = 1
    block = blocks(tiny, side)[layer]
    other = target(tiny, pixels, ids, side)
    z = captured_input(block, lambda: features(tiny, pixels, ids, side))
    leaf = z.clone().requires_grad_(True)
    with replaced_input(block, leaf):
        value = tiny.clip.logit_scale.exp() * F.cosine_similarity(
            features(tiny, pixels, ids, side), other)
    (g,) = torch.autograd.grad(value.sum(), leaf)
    n = n_tokens(tiny, ids)
    if variant == "paper":
        cam = (g * z).sum(-1)
    else:
        weights = g[:, 1:].mean(1) if side == "image" else g[:, :n].mean(1)
        cam = (weights[:, None] * z).sum(-1)
    expected = cam.clamp(min=0)[0]
    if side == "text":
        expected = expected[:n]
    a = nibcore.explain(tiny, picture, TEXT, method="gradcam", side=side, layer=layer,
                        variant=variant)
    assert_paths_close(a.raw, expected.numpy(), rtol=1e-4)
    assert float(a.extras["value"]) == pytest.approx(float(value.detach()), rel=1e-5)


# --- MFABA -----------------------------------------------------------------------------------

def embedding_entry(model, side):
    """The module whose input is the input embedding: ``ln_pre`` (image: patches + CLS +
    positions) or the text transformer (token + positional embedding)."""
    return model.clip.visual.ln_pre if side == "image" else model.clip.transformer


@pytest.mark.parametrize("side", ["image", "text"])
def test_mfaba_signed_steps(tiny, picture, side):
    """e_{t+1} = e_t − η sign(g_t), g_t = ∂f/∂e(e_t); raw = −Σ_t Σ_c (e_{t+1} − e_t) ⊙ g_t with
    f the cosine (image) / the logit (text), the path f(e_0..e_{T−1})."""
    pixels, ids = inputs(tiny, picture)
    steps, eta = 4, 0.05
    entry = embedding_entry(tiny, side)
    other = target(tiny, pixels, ids, side)
    scale = 1.0 if side == "image" else float(tiny.clip.logit_scale.exp())
    e = captured_input(entry, lambda: features(tiny, pixels, ids, side))
    raw = torch.zeros(e.shape[:2])
    path = []
    for _ in range(steps):
        leaf = e.clone().requires_grad_(True)
        with replaced_input(entry, leaf):
            value = scale * F.cosine_similarity(features(tiny, pixels, ids, side), other)
        (g,) = torch.autograd.grad(value.sum(), leaf)
        path.append(float(value))
        e_next = e - eta * g.sign()
        raw -= ((e_next - e) * g).sum(-1)
        e = e_next
    expected = raw[0] if side == "image" else raw[0, : n_tokens(tiny, ids)]
    a = nibcore.explain(tiny, picture, TEXT, method="mfaba", side=side, num_steps=steps,
                        step_size=eta)
    assert_paths_close(a.raw, expected.numpy(), rtol=1e-4)
    np.testing.assert_allclose(a.extras["path"], path, rtol=1e-5)


# --- RISE ------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["image", "text"])
def test_rise_estimator(tiny, picture, side):
    """Image: Σ_k s_k M_k / (n p) per pixel, s_k = cosine(feature of pixels ⊙ M_k, text);
    text: masks of the (context × width) token-embedding matrix, positions kept,
    raw = Σ_c mean_k(s_k M_k) / p. One mask at a time here; nibcore batches them."""
    pixels, ids = inputs(tiny, picture)
    n, cells, p, seed = 12, 3, 0.5, 5
    other = target(tiny, pixels, ids, side)
    if side == "image":
        size = tuple(pixels.shape[-2:])
    else:
        tokens = tiny.clip.token_embedding(ids).detach()
        size = tuple(tokens.shape[-2:])
    grids, shifts = rise_grids(n, cells, p, torch.Generator().manual_seed(seed),
                               torch.device("cpu"))
    masks = rise_masks(grids, shifts, size)
    acc = torch.zeros(size)
    with torch.no_grad():
        for m in masks:
            if side == "image":
                feat = tiny.clip.encode_image(pixels * m)
            else:
                positions = tiny.clip.positional_embedding
                with replaced_input(tiny.clip.transformer, tokens * m + positions):
                    feat = tiny.clip.encode_text(ids)
            acc += float(F.cosine_similarity(feat, other)) * m
    if side == "image":
        expected = acc / (n * p)
    else:
        expected = ((acc / n).sum(-1) / p)[: n_tokens(tiny, ids)]
    a = nibcore.explain(tiny, picture, TEXT, method="rise", side=side, n_masks=n,
                        mask_grid=cells, p=p, seed=seed, rows_per_call=5)
    assert_paths_close(a.raw, expected.numpy(), rtol=1e-4)
    assert math.isclose(a.passes["forward"], 1 + math.ceil(n / 5))
