"""NIB's exact savings are exact: the results equal a straightforward re-implementation of the
computation as it was before them (every λ row, f(0) and f(1) as zero-weight rows of the same
back-propagated passes, each side on its own with the full other tower). The reference calls the
towers' ``upper`` as the library does, so both run the last block on the pooled token alone (the
pooled-token floor, ``nibcore.models``); against the full last block see
``tests/test_pooled_block.py``.

The reference back-propagates f(0) and f(1) as extra rows of its batches, the library does not, so
its matrix products see batches of another shape: the results are equal within the float noise
measured between numeric paths (``nibcore.numerics.FLOAT_NOISE_RTOL``), not in bits — they were
bit-identical on this AMD EPYC's native path, but not under ``ATEN_CPU_CAPABILITY=default
MKL_CBWR=COMPATIBLE`` (6e-8), and f(0) at 1e-6 failed on an Intel Xeon. Bits are asserted only for
literally the same computation."""

import numpy as np
import pytest
import torch
from PIL import Image

from noise import assert_paths_close
import nibcore
from nibcore.base import cosine, default_layer
from nibcore.inputs import prepare_pairs
from nibcore.schedules import make_schedule

TEXTS = ["a red circle", "two blue squares on green grass", "a cat"]


def reference(model, pixels, ids, side, num_steps=10, schedule="paper", rows_per_call=128):
    """Raw scores, f(1), f(0): all rows back-propagated, in chunks of ``rows_per_call``."""
    tower = model.tower(side)
    layer = default_layer(tower)
    ids = model.trim(ids)
    with torch.no_grad():
        if side == "image":
            target, z = model.encode_text(ids), tower.lower(pixels, layer)
        else:
            target, z = model.encode_image(pixels), tower.lower(ids, layer)
    lambdas, weights = make_schedule(schedule, num_steps)
    has_one = float(lambdas[-1]) == 1.0
    ends = torch.tensor([0.0] if has_one else [0.0, 1.0], dtype=lambdas.dtype)
    lam = torch.cat([lambdas, ends]).to(z.dtype)
    w = torch.cat([weights, torch.zeros_like(ends)]).to(z.dtype)
    steps, batch = len(lam), z.shape[0]
    step_of_row = torch.arange(steps).repeat_interleave(batch)
    pair_of_row = torch.arange(batch).repeat(steps)
    grad_sum, values = torch.zeros_like(z), torch.empty(steps * batch)
    for start in range(0, steps * batch, rows_per_call):
        s, p = step_of_row[start:start + rows_per_call], pair_of_row[start:start + rows_per_call]
        scaled = (lam[s, None, None] * z[p]).requires_grad_(True)
        f = cosine(tower.upper(scaled, layer, None if side == "image" else ids[p]), target[p])
        (grad,) = torch.autograd.grad(f.sum(), scaled)
        grad_sum.index_add_(0, p, w[s, None, None] * grad)
        values[start:start + rows_per_call] = f.detach()
    values = values.view(steps, batch)
    f1 = values[len(lambdas) - 1] if has_one else values[-1]
    return (z * grad_sum).sum(-1), f1, values[len(lambdas)]


@pytest.fixture(scope="module")
def pairs(tiny):
    rng = np.random.RandomState(5)
    images = [Image.fromarray((rng.rand(32, 32, 3) * 255).astype("uint8")) for _ in TEXTS]
    return prepare_pairs(tiny, images, TEXTS)


def _check(model, pixels, ids, side, atts, **kw):
    raw, f1, f0 = reference(model, pixels, ids, side, **kw)
    for b, a in enumerate(atts):
        n = a.raw.shape[0]
        assert_paths_close(a.raw, raw[b, :n].numpy())
        assert_paths_close([a.f1, a.f0], [float(f1[b]), float(f0[b])])


@pytest.mark.parametrize("side", ["image", "text"])
def test_paper_schedule_matches_the_reference(tiny, pairs, side):
    pixels, ids = pairs
    atts = nibcore.explain(tiny, pixels, TEXTS, side=side)
    _check(tiny, pixels, ids, side, atts)
    one = nibcore.explain(tiny, pixels[1], TEXTS[1], side=side)
    _check(tiny, pixels[1:2], ids[1:2], side, [one])


@pytest.mark.parametrize("side", ["image", "text"])
def test_the_same_computation_gives_the_same_bits(tiny, pairs, side):
    """Determinism: one call repeated, and a ``rows_per_call`` that cuts the rows into the same
    chunks (10 λ rows of one pair fit one call either way), give identical bits."""
    pixels, _ = pairs
    one = nibcore.explain(tiny, pixels[1], TEXTS[1], side=side)
    again = nibcore.explain(tiny, pixels[1], TEXTS[1], side=side)
    same_chunks = nibcore.explain(tiny, pixels[1], TEXTS[1], side=side, rows_per_call=10)
    for other in (again, same_chunks):
        assert np.array_equal(one.raw, other.raw) and np.array_equal(one.scores, other.scores)
        assert (one.f1, one.f0) == (other.f1, other.f0)


@pytest.mark.parametrize("side", ["image", "text"])
def test_small_chunks_match_the_reference(tiny, pairs, side):
    pixels, ids = pairs
    atts = nibcore.explain(tiny, pixels, TEXTS, side=side, rows_per_call=7)
    _check(tiny, pixels, ids, side, atts, rows_per_call=7)


@pytest.mark.parametrize("side", ["image", "text"])
def test_completeness_schedule_matches_the_reference(tiny, pairs, side):
    pixels, ids = pairs
    atts = nibcore.explain(tiny, pixels, TEXTS, side=side, schedule="completeness", num_steps=3)
    _check(tiny, pixels, ids, side, atts, schedule="completeness", num_steps=3)


def test_fewer_backward_rows_than_the_reference(tiny, pairs):
    """f(0) (and f(1)) no longer ride along as back-propagated rows."""
    pixels, ids = pairs
    before = tiny.passes.snapshot()
    nibcore.explain(tiny, pixels, TEXTS, side="image", num_steps=4)
    assert tiny.passes.since(before)["backward_rows"] == 4 * len(TEXTS)
    before = tiny.passes.snapshot()
    nibcore.explain(tiny, pixels, TEXTS, side="image", num_steps=4, schedule="completeness")
    n_nodes = len(make_schedule("completeness", 4)[0])
    assert tiny.passes.since(before)["backward_rows"] == n_nodes * len(TEXTS)


def _same(a, b):
    assert np.array_equal(a.raw, b.raw), np.abs(a.raw - b.raw).max()
    assert np.array_equal(a.scores, b.scores)
    assert (a.f1, a.f0, a.side, a.tokens) == (b.f1, b.f0, b.side, b.tokens)


def _close(a, b):
    """The same attribution from another batch shape: within the float noise."""
    assert_paths_close(a.raw, b.raw)
    assert_paths_close(a.scores, b.scores)
    assert_paths_close([a.f1, a.f0], [b.f1, b.f0])
    assert (a.side, a.tokens) == (b.side, b.tokens)


@pytest.mark.parametrize("kw", [{}, {"rows_per_call": 7}, {"layer": 1},
                                {"schedule": "completeness", "num_steps": 3}])
def test_both_sides_in_one_call_match_each_side_alone(tiny, pairs, kw):
    """The image side is bit-identical (its target, the text feature, is the same pass); the text
    side's target is the image path's own row at λ = 1 where the schedule ends at 1, computed in
    a batch of every row of the path: the same feature up to the float noise of another batch
    shape — bit-identical where the schedule does not end at 1 (the completeness schedule)."""
    pixels, _ = pairs
    image, text = nibcore.explain(tiny, pixels, TEXTS, side="both", **kw)
    ends_at_one = kw.get("schedule", "paper") == "paper"
    for side, got in (("image", image), ("text", text)):
        check = _close if side == "text" and ends_at_one else _same
        for a, b in zip(got, nibcore.explain(tiny, pixels, TEXTS, side=side, **kw)):
            check(a, b)
    one = nibcore.explain(tiny, pixels[2], TEXTS[2], side="both", **kw)
    assert isinstance(one, tuple) and [a.side for a in one] == ["image", "text"]
    (_close if ends_at_one else _same)(
        one[1], nibcore.explain(tiny, pixels[2], TEXTS[2], side="text", **kw))


def test_both_sides_run_each_tower_once_below_the_bottleneck(tiny, pairs):
    """Per side, the other tower runs whole for the target feature; in one call for both sides
    each tower's lower blocks run once: B rows fewer through each of the lower blocks of both
    towers, the same number of back-propagated rows; and the image feature (the text side's
    target) is the image path's own row at λ = 1, so the image tower's upper blocks run B rows
    fewer too."""
    pixels, _ = pairs
    rows = {"image": 0, "text": 0}
    towers = {s: tiny.tower(s) for s in rows}

    def counter(side):
        def hook(module, args, out):
            rows[side] += args[0].shape[0]
        return hook

    handles = [b.register_forward_hook(counter(s)) for s, t in towers.items() for b in t.blocks]
    counts, block_rows = {}, {}
    try:
        for side in ("image", "text", "both"):
            before, rows_before = tiny.passes.snapshot(), dict(rows)
            nibcore.explain(tiny, pixels, TEXTS, side=side, num_steps=4)
            counts[side] = tiny.passes.since(before)
            block_rows[side] = {s: rows[s] - rows_before[s] for s in rows}
    finally:
        for h in handles:
            h.remove()
    batch = len(TEXTS)
    for s, t in towers.items():
        saved = default_layer(t) * batch  # the lower blocks, run once
        if s == "image":  # and the image feature is the path's row at λ = 1: no pass of its own
            saved = t.n_blocks * batch
        assert block_rows["both"][s] == block_rows["image"][s] + block_rows["text"][s] - saved
    assert counts["both"]["backward_rows"] == (counts["image"]["backward_rows"]
                                               + counts["text"]["backward_rows"])


def test_both_sides_for_a_method_without_sharing_match_each_side(tiny, pairs):
    pixels, _ = pairs
    image, text = nibcore.explain(tiny, pixels[:2], TEXTS[:2], method="saliency", side="both")
    for side, got in (("image", image), ("text", text)):
        for a, b in zip(got, nibcore.explain(tiny, pixels[:2], TEXTS[:2], method="saliency",
                                             side=side)):
            _same(a, b)
    assert nibcore.METHODS["nib"].shares_sides() and not nibcore.METHODS["saliency"].shares_sides()


def test_unknown_side_is_one_line(tiny, pairs):
    pixels, _ = pairs
    with pytest.raises(ValueError, match="side") as err:
        nibcore.explain(tiny, pixels[0], TEXTS[0], side="both sides")
    assert "\n" not in str(err.value)
