"""The interactive explorer of the book's Explore chapter: explain one (image, caption) pair with
any method and show the image map and the token scores, from code or from ipywidgets controls.

Figures come from :mod:`nibcore.viz`; ipywidgets is imported only when :func:`explorer` is
called, so the rest of this module works without it.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from ..attribution import Attribution, explain
from ..base import METHODS
from ..models import ClipModel
from ..world import scenes
from . import figures as viz
from .theory import patch_values

#: the methods whose ``layer`` parameter the explorer sets
LAYERED = ("nib", "m2ib", "gradcam")


def explain_pair(model: ClipModel, image: Image.Image, caption: str, method: str = "nib",
                 layer: int | None = None,
                 num_steps: int = 10) -> tuple[Attribution, Attribution]:
    """``(image side, text side)`` attributions of ``method`` for one pair; ``layer`` is passed to
    the methods of :data:`LAYERED` (image side), ``num_steps`` to NIB."""
    params: dict[str, Any] = {}
    if method in LAYERED:
        params["layer"] = layer
    if method == "nib":
        params["num_steps"] = num_steps
    img = explain(model, image, caption, method=method, **params)
    txt = explain(model, image, caption, method=method, side="text")
    return img, txt


def show(model: ClipModel, image: Image.Image, caption: str, method: str = "nib",
         layer: int | None = None, num_steps: int = 10, signed: bool = False) -> None:
    """Display the image map (a figure) and the token scores (coloured HTML) of one pair.

    ``signed``: for methods with one raw score per token, the signed per-patch scores instead of
    the normalised map (other methods ignore it).
    """
    from IPython.display import HTML, display

    img, txt = explain_pair(model, image, caption, method, layer, num_steps)
    patches = patch_values(img, model.grid) if signed and img.raw.ndim == 1 else None
    viz.explained_pair(image, caption, img.scores, method, patches)
    viz.show()
    display(HTML(viz.tokens_html(txt.tokens[1:-1], txt.content_scores,
                                 label=f"{method}, text side:")))


def uploaded_image(value: Any) -> Image.Image | None:
    """The picture of a ``FileUpload`` widget's value (ipywidgets 7: a dict of name -> item,
    8: a tuple of items), as RGB; ``None`` when nothing was uploaded."""
    if not value:
        return None
    item = value[0] if isinstance(value, (list, tuple)) else next(iter(value.values()))
    return Image.open(io.BytesIO(item["content"])).convert("RGB")


def explorer(model: ClipModel, seed: int = 42, caption: str | None = None):
    """The explorer's controls (an ipywidgets ``VBox``): scene seed or an uploaded picture, the
    caption (the scene's own unless ``caption``; a new seed puts its scene's caption in the box),
    method, signed, layer (default three quarters up the image tower), num_steps, a button and the
    output area where :func:`show` draws."""
    import ipywidgets as w

    seed_box = w.IntText(value=seed, description="scene seed")
    caption_box = w.Text(value=caption if caption is not None else scenes.sample(seed).caption,
                         description="caption", layout=w.Layout(width="420px"))
    method_box = w.Dropdown(options=sorted(METHODS), value="nib", description="method")
    layer_box = w.IntSlider(value=(3 * model.image.n_blocks) // 4, min=0,
                            max=model.image.n_blocks - 1, description="layer")
    steps_box = w.IntSlider(value=10, min=1, max=50, description="num_steps")
    signed_box = w.Checkbox(value=False, description="signed (per-token methods)")
    upload = w.FileUpload(accept="image/*", multiple=False, description="upload image")
    button = w.Button(description="explain", button_style="primary")
    out = w.Output()

    def on_seed(change):
        caption_box.value = scenes.sample(change["new"]).caption

    def on_click(_):
        with out:
            out.clear_output(wait=True)
            image = uploaded_image(upload.value)
            if image is None:
                image = scenes.sample(seed_box.value).image
            show(model, image, caption_box.value, method_box.value, layer_box.value,
                 steps_box.value, signed_box.value)

    seed_box.observe(on_seed, names="value")
    button.on_click(on_click)
    return w.VBox([w.HBox([seed_box, upload]), caption_box, w.HBox([method_box, signed_box]),
                   w.HBox([layer_box, steps_box]), button, out])
