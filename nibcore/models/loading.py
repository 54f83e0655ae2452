"""Loading: the bundled mini model, open_clip names with a pretrained tag or a local checkpoint,
and loaders registered by optional back-ends (:mod:`nibcore.hf` registers Hugging Face's)."""

from __future__ import annotations

import contextlib
import difflib
import logging
import socket
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import open_clip
import torch

from ..checks import check_file, check_folder, read_file, read_json_file
from .clip import ClipModel

#: The model name that loads our bundled offline CLIP (see ``data/MINI_CLIP_CARD.md``).
MINI = "mini"
#: The bundled models, by name: the stem of their files in ``data/`` (``<stem>.json`` and
#: ``<stem>.safetensors``, as :mod:`nibcore.world.train` exports them): ``mini`` (the scenes),
#: ``cue`` and ``cue-control`` (the cue world's model and its control, ``data/CUE_CLIP_CARD.md``).
BUNDLED = {MINI: "mini-clip", "cue": "cue-clip", "cue-control": "cue-control-clip"}


def bundled_file(name: str) -> Path:
    """A file of the bundled data: the repository's ``data/`` (clone, editable install) or the
    installed package ``nibcore._bundled`` (``pip install git+...``)."""
    candidates = [Path(__file__).resolve().parents[2] / "data" / name]
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


def load_bundled(name: str = MINI, folder: str | Path | None = None) -> ClipModel:
    """A bundled model (:data:`BUNDLED`), or a snapshot of one in ``folder`` (its ``<stem>.json``
    + ``<stem>.safetensors``, as written by :mod:`nibcore.world.train`)."""
    from safetensors.torch import load_file

    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; bundled: {list(BUNDLED)}")
    stem = BUNDLED[name]

    def find(file: str) -> Path:
        return bundled_file(file) if folder is None else \
            check_folder(folder, f"{name} model folder") / file

    cfg = read_json_file(find(f"{stem}.json"), f"{name} model config")
    weights = read_file(find(f"{stem}.safetensors"), f"{name} model weights",
                        lambda p: load_file(str(p)),
                        f"a .safetensors file of the {name} model's tensors")
    return build_clip(cfg["model_cfg"], cfg.get("image_size"), cfg.get("mean"), cfg.get("std"),
                      name=name, state_dict=weights)


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


#: Loaders registered by optional back-ends, tried in order before open_clip's names:
#: ``(claims, load)`` — ``claims(name)`` says whether ``name`` is theirs, ``load(name, device,
#: tokenizer)`` builds the :class:`ClipModel`.
LOADERS: list[tuple[Callable[[str], bool], Callable[..., ClipModel]]] = []


def register_loader(claims: Callable[[str], bool], load: Callable[..., ClipModel]) -> None:
    """Let :func:`load_model` hand the names ``claims(name)`` accepts to ``load(name, device,
    tokenizer)`` (how :mod:`nibcore.hf` adds Hugging Face models without this module importing
    it)."""
    LOADERS.append((claims, load))


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
    for claims, load in LOADERS:
        if claims(name):
            if pretrained is not None:
                raise ValueError("this model carries its own weights: leave pretrained=None")
            return load(name, device, tokenizer)
    if tokenizer is not None:
        raise ValueError("tokenizer= is for Hugging Face SigLIP models; open_clip models come with "
                         "their own tokenizer")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if name in BUNDLED:
        if pretrained is not None:
            raise ValueError(f"the bundled {name!r} model has its own weights: leave "
                             f"pretrained=None")
        return load_bundled(name).to(device)
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known + list(BUNDLED), n=3)
        raise ValueError(f"unknown model name {name!r}; did you mean {close}? "
                         f"Use a bundled model ({', '.join(BUNDLED)}) or a name from "
                         f"open_clip.list_models().")
    checkpoint, options = None, {}
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained is not None and (_looks_like_path(pretrained) or (
            pretrained not in tags and Path(pretrained).expanduser().exists())):
        checkpoint = check_file(pretrained, "checkpoint")
    elif pretrained is not None:
        if pretrained not in tags:
            raise ValueError(f"unknown pretrained tag {pretrained!r} for {name}; "
                             f"known tags: {tags}, or pass a local checkpoint path")
        # weights already on disk are used without asking the network; only a download probes
        checkpoint = cached_weights(name, pretrained, cache_dir)
        if checkpoint is None and not network_available():
            where = cache_dir or "the Hugging Face hub cache and ~/.cache/clip"
            raise _offline_error(name, pretrained, f"no network: huggingface.co is "
                                 f"unreachable, and no earlier download is in {where}")
        if checkpoint is not None:
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
