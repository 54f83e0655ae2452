"""How much memory an attribution call needs, and a one-line refusal when it cannot fit.

:func:`check_call` runs inside :func:`nibcore.explain` for every method, after the inputs are
prepared and *before* the method is built or runs: it estimates the call's peak memory from the
method's parameters, the batch and the model (:func:`estimate`), compares it with the memory the
device has free (:func:`available_bytes`) and raises :class:`InsufficientMemoryError` (a
``MemoryError``) naming both figures and the parameters to lower, instead of letting the call end
in the kernel's OOM killer or a CUDA out-of-memory traceback. There is no fixed cap: the same
parameters run on a machine that holds them.

The model of a pass (:class:`TowerShape`), per row of ``N`` tokens, width ``D``, MLP width
``M``, ``H`` heads and ``b`` bytes per element:

* through ``k`` blocks **with** a backward pass (gradients w.r.t. the input only: the weights are
  frozen, so linear layers keep nothing), autograd keeps ``N · (12 D + g M) · b`` per block (the
  LayerNorm inputs, q/k/v and the attention output, the activation's input; ``g`` = 1 for GELU,
  2 for QuickGELU, which keeps its sigmoid too), ``6 N D · b`` for a last block run on the pooled
  token alone, plus ``N · (2 D + g M) · b`` for the block being differentiated;
* **without** gradients, one block's working set at a time: ``N · (6 D + 2 g M + 3 N H) · b``
  (the MLP's hidden activations and every head's attention matrix).

Each method's plan (:data:`PLANS`) follows what its code allocates: a chunked method's peak
depends on its chunk (``rows_per_call``), not on how many chunks it runs; ``num_steps`` counts
only through the tensors that hold every step (NIB's schedule and (step, pair) row indices, the
n² matrix numpy diagonalises for the ``"completeness"`` schedule's Gauss-Legendre nodes, MFABA's
path); RISE's ``n_masks`` through the mask grids it draws up front. The sum of the parts is scaled
by :data:`MARGIN`.

Measured (CPU, peak RSS of the call minus RSS before it, fresh process per call, after a warm-up
call) on the bundled ``mini`` model and a random ViT-B/32 (``ViT-B-32-quickgelu``), 24 calls:
every method but FastIG (Saliency's plan), image and text sides, batches of 1-64 pairs, NIB with
``num_steps`` 64 to 2·10⁷ and the completeness schedule at ``num_steps=3000``, RISE with 256 to
3·10⁵ masks: the estimate is
1.0-1.6 times the measured peak (median 1.3), never below it. GPU memory is compared the same way
against ``torch.cuda.mem_get_info``; it was not measured here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .models import ClipModel, Tower

#: Set to ``0`` / ``off`` to skip the check (e.g. with swap the estimate does not know about).
ENV_SWITCH = "NIB_MEMORY_CHECK"
#: Python and allocator overhead of one small tensor kept per step (MFABA's path), measured.
TENSOR_OVERHEAD = 512
#: Whole calls measure above the sum of their parts (memory a chunked loop frees but the allocator
#: keeps; 0.80-1.37x the parts' sum measured): the estimate is the sum times this.
MARGIN = 1.25
#: numpy's Gauss-Legendre nodes (``leggauss(n)``) build and diagonalise an n × n matrix:
#: about 16.7 n² bytes measured.
LEGGAUSS_BYTES_PER_N2 = 17


class InsufficientMemoryError(MemoryError):
    """A call needs more memory than the device has free; the message gives both figures."""


# --- the model of a pass -----------------------------------------------------------------------

@dataclass(frozen=True)
class TowerShape:
    """The sizes of one tower that a pass's memory depends on.

    Attributes:
        tokens: tokens per row ``N``.
        width: residual width ``D``.
        hidden: MLP width ``M``.
        heads: attention heads ``H``.
        blocks: the tower's depth.
        kept: activations autograd keeps per MLP unit: 1 (GELU), 2 (QuickGELU).
        bytes: bytes per element.
        pooled: whether ``upper`` runs the last block on the pooled token alone (then that block
            keeps only its keys and values for every token).
    """

    tokens: int
    width: int
    hidden: int
    heads: int
    blocks: int
    kept: int
    bytes: int
    pooled: bool = False

    @classmethod
    def of(cls, tower: Tower, tokens: int, element_size: int = 4,
           ids: torch.Tensor | None = None) -> "TowerShape":
        """The shape of ``tower`` for rows of ``tokens`` tokens.

        Args:
            tower: a :class:`~nibcore.models.Tower`.
            tokens: tokens per row.
            element_size: bytes per element (the model's dtype).
            ids: the token ids ``(B, C)`` (text side), for the pooled token.
        """
        block = tower.blocks[0]
        linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        norms = [m for m in block.modules() if isinstance(m, torch.nn.LayerNorm)]
        width = int(norms[0].normalized_shape[0]) if norms else int(linears[0].in_features)
        hidden = max([int(m.out_features) for m in linears] + [width])
        attn = getattr(block, "attn", getattr(block, "self_attn", None))
        heads = int(getattr(attn, "num_heads", 1) or 1)
        quick = any(type(m).__name__ == "QuickGELU" for m in block.modules())
        pooled_query = getattr(tower, "pooled_query", None)
        pooled = bool(getattr(tower, "_pooled_last_block", False)) and pooled_query is not None \
            and pooled_query(None if tower.side == "image" else ids[:1], 1) is not None
        return cls(tokens, width, hidden, heads, tower.n_blocks, 2 if quick else 1,
                   element_size, pooled)

    def state(self, rows: int) -> int:
        """Bytes of a hidden state ``(rows, N, D)``."""
        return rows * self.tokens * self.width * self.bytes

    def attention(self, rows: int) -> int:
        """Bytes of one block's attention matrices ``(rows, H, N, N)``."""
        return rows * self.heads * self.tokens ** 2 * self.bytes

    def forward(self, rows: int) -> int:
        """Peak bytes of ``rows`` rows through the tower without gradients."""
        per_token = 6 * self.width + 2 * self.kept * self.hidden + 3 * self.tokens * self.heads
        return rows * self.tokens * per_token * self.bytes

    def backward(self, rows: int, blocks: int, recorded: bool = False) -> int:
        """Peak bytes of ``rows`` rows through the top ``blocks`` blocks with a backward pass.

        Args:
            rows: rows in the pass.
            blocks: blocks run (the last ``blocks`` of the tower).
            recorded: whether the pass records attention (every block then runs every token).
        """
        floor = self.pooled and not recorded and blocks > 0
        block = 12 * self.width + self.kept * self.hidden
        working = 2 * self.width + self.kept * self.hidden  # the block being differentiated
        per_token = (blocks - floor) * block + floor * 6 * self.width + working
        return rows * self.tokens * per_token * self.bytes


# --- the plans of the methods ------------------------------------------------------------------

@dataclass
class Call:
    """What a plan knows about a call.

    Attributes:
        model: the model.
        shape: the explained tower's :class:`TowerShape`.
        tower: the explained tower.
        pairs: pairs in the call ``B``.
        side: ``"image"`` or ``"text"``.
        params: the method's parameters, defaults filled in (not yet validated: a plan reads
            them with :meth:`int` and ignores values the method will refuse).
    """

    model: ClipModel
    shape: TowerShape
    tower: Tower
    pairs: int
    side: str
    params: Mapping[str, Any]
    #: scratch a plan notes in host RAM whatever the model's device (numpy), ``{parameter: bytes}``
    host: dict[str, int] = field(default_factory=dict)

    @property
    def on_cpu(self) -> bool:
        """Whether the model's device memory is the host RAM."""
        return self.model.device.type == "cpu"

    def int(self, name: str, default: int = 1) -> int:
        """Parameter ``name`` if it is a positive int, else ``default``."""
        value = self.params.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return default
        return value

    def layer(self, default: int) -> int:
        """The ``layer`` parameter if it is a valid block index, else ``default``."""
        value = self.params.get("layer")
        if isinstance(value, int) and not isinstance(value, bool) \
                and 0 <= value < self.tower.n_blocks:
            return value
        return default


#: ``{part: bytes}``: a plan's estimate, split by the parameter that drives each part (the part's
#: name is what the refusal tells the user to lower).
Parts = dict[str, int]
Plan = Callable[[Call], Parts]

#: Method name -> plan. Methods without one get :func:`_plan_gradient` (one backward through the
#: whole tower, the least any gradient method needs).
PLANS: dict[str, Plan] = {}
#: Method name -> whether it cuts text ids after the longest text (its rows are shorter).
TRIMS_TEXT = {"nib", "gradeclip"}

PAIRS = "the pairs per call"


def register_plan(name: str, plan: Plan, trims_text: bool = False) -> None:
    """Give method ``name`` its memory plan.

    Args:
        name: the method's registered name.
        plan: ``plan(call) -> {parameter: bytes}``.
        trims_text: whether the method runs the text tower on ids trimmed after the longest text.
    """
    PLANS[name] = plan
    if trims_text:
        TRIMS_TEXT.add(name)


def _plan_gradient(call: Call) -> Parts:
    s = call.shape
    return {PAIRS: s.backward(call.pairs, s.blocks) + 4 * s.state(call.pairs)}


def _nib_nodes(call: Call) -> tuple[int, int]:
    """(quadrature nodes S, peak bytes while the schedule is built)."""
    from .schedules import DEPTHS

    n = call.int("num_steps", 10)
    if call.params.get("schedule") == "completeness":  # at most the deepest range + one split
        nodes = n * (DEPTHS[-1] + call.pairs)           # decade per pair
        return nodes, LEGGAUSS_BYTES_PER_N2 * n * n + 48 * nodes
    return n, 24 * n


def _nib(call: Call) -> Parts:
    from .base import default_layer

    s = call.shape
    blocks = s.blocks - call.layer(default_layer(call.tower))
    nodes, building = _nib_nodes(call)
    rows = min(call.int("rows_per_call", 128), nodes * call.pairs)
    # kept: λ and weights (float64, float32 copies); per (node, pair) row: step and pair index,
    # the objective
    path = 24 * nodes + 20 * nodes * call.pairs
    chunk = s.backward(rows, blocks) + 4 * s.state(rows)  # z[p], λ z[p], its gradient, w·grad
    state = 3 * s.state(call.pairs)
    if not call.on_cpu:  # the schedule is built in RAM (numpy, float64), the path on the device
        call.host["num_steps"] = building
    elif building > path + chunk:  # the schedule's scratch is freed before the path runs
        return {"num_steps": building, PAIRS: state}
    return {"num_steps": path, "rows_per_call": chunk, PAIRS: state}


def _m2ib(call: Call) -> Parts:
    from .methods.common import block_output_layer

    s = call.shape
    blocks = s.blocks - call.layer(block_output_layer(call.tower, None))
    rows = call.int("n_samples", 10) * call.pairs
    # α, its gradient, Adam's two moments, λ, μ, σ, the KL and what backward keeps of them;
    # per draw: the noise, σ·noise and the bottleneck output
    return {"n_samples": s.backward(rows, blocks) + 3 * s.state(rows),
            PAIRS: 12 * s.state(call.pairs)}


def _mfaba(call: Call) -> Parts:
    s = call.shape
    steps = call.int("num_steps", 10)
    return {"num_steps": steps * (TENSOR_OVERHEAD + 2 * s.bytes * call.pairs),
            PAIRS: s.backward(call.pairs, s.blocks) + 5 * s.state(call.pairs)}


def _rise(call: Call) -> Parts:
    from .methods.rise import RISE

    s, b = call.shape, call.shape.bytes
    n = call.int("n_masks", RISE.paper_masks[call.side])
    cells = call.int("mask_grid", 8)
    rows = min(call.int("rows_per_call", 100), call.pairs * n)
    if call.side == "image":
        h, w = call.model.image_size
        planes = 3
    else:
        h, w = s.tokens, s.width
        planes = 1
    # grids: the comparison with the uniform draws (freed after it), then the float grid;
    # shifts: two floats per mask
    masks = n * (cells * cells * (b + 1) + 2 * b)
    # per row, alive during the chunk's forward pass: the mask, the masked input (and the
    # gathered input it is made from, or the upsampled grid the mask is cropped from)
    chunk = rows * ((2 + planes) * h * w * b + 16 * (h + w)) + s.forward(rows)
    return {"n_masks": masks, "rows_per_call": chunk,
            PAIRS: call.pairs * (h * w * b + planes * h * w * b)}


def _gradcam(call: Call) -> Parts:
    from .methods.common import block_output_layer

    s = call.shape
    blocks = s.blocks - call.layer(block_output_layer(call.tower, None))
    return {PAIRS: s.backward(call.pairs, blocks) + 4 * s.state(call.pairs)}


def _attention(recorded: Callable[[Call], int], rollout: bool = False,
               isolated: bool = False) -> Plan:
    """The plan of a method that runs the whole tower once with ``recorded(call)`` blocks'
    attention explicit (scores, probabilities and their kept gradients, q/k/v and the output);
    ``isolated``: the recorded blocks' inputs are detached (LeGrad), so only they keep
    activations for the backward."""
    def plan(call: Call) -> Parts:
        s, k = call.shape, recorded(call)
        explicit = k * (3 * s.attention(call.pairs) + 5 * s.state(call.pairs))
        if rollout:  # relevance per block and the running product, (B, N, N) each
            explicit += (k + 2) * call.pairs * s.tokens ** 2 * s.bytes
        graph = k if isolated else s.blocks
        return {PAIRS: s.backward(call.pairs, graph, recorded=True) + explicit}
    return plan


def _gradeclip_blocks(call: Call) -> int:
    from .methods.gradeclip import default_gradeclip_layer

    return call.tower.n_blocks - call.layer(default_gradeclip_layer(call.tower))


def _legrad_blocks(call: Call) -> int:
    from .methods.legrad import default_legrad_layer

    return call.tower.n_blocks - call.layer(default_legrad_layer(call.tower))


def _chefer(call: Call) -> Parts:
    if call.params.get("variant") == "rollout":
        return _attention(lambda c: c.tower.n_blocks, rollout=True)(call)
    return _attention(lambda c: 1)(call)


PLANS.update({"nib": _nib, "m2ib": _m2ib, "mfaba": _mfaba, "rise": _rise, "gradcam": _gradcam,
              "saliency": _attention(lambda c: 1), "fastig": _attention(lambda c: 1),
              "chefer": _chefer, "gradeclip": _attention(_gradeclip_blocks),
              "legrad": _attention(_legrad_blocks, isolated=True)})


# --- estimate, availability, check -------------------------------------------------------------

def _tokens(model: ClipModel, side: str, ids: torch.Tensor, trims: bool) -> int:
    if side == "image":
        rows, cols = model.grid
        return model.image.prefix_tokens + rows * cols
    if trims and model.text.attn_mask is not None:
        return int(model.text_length(ids).max())
    return int(ids.shape[1])


@dataclass
class Estimate:
    """The peak memory of a call, split by the parameter that drives each part (the part's name
    is what a refusal tells the user to lower).

    Attributes:
        parts: ``{parameter: bytes}`` on the model's device (RAM on CPU).
        host: ``{parameter: bytes}`` of scratch in RAM when the model is on a GPU.
    """

    parts: Parts
    host: Parts = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Bytes on the model's device."""
        return sum(self.parts.values())


def estimate(model: ClipModel, method: str, params: Mapping[str, Any], pairs: int, side: str,
             ids: torch.Tensor) -> Estimate:
    """The peak memory of one call of ``method``.

    Args:
        model: the model.
        method: a method name (see :data:`PLANS`; others get a one-backward plan).
        params: the method's parameters with defaults filled in.
        pairs: pairs in the call.
        side: ``"image"``, ``"text"`` or ``"both"`` (the larger side: they run one after another).
        ids: the token ids ``(B, C)`` of the call.
    """
    if side == "both":
        sides = [estimate(model, method, params, pairs, s, ids) for s in ("image", "text")]
        return max(sides, key=lambda e: e.total)
    tower = model.tower(side)
    element = next(model.clip.parameters()).element_size()
    shape = TowerShape.of(tower, _tokens(model, side, ids, method in TRIMS_TEXT), element, ids)
    call = Call(model, shape, tower, pairs, side, params)
    parts = PLANS.get(method, _plan_gradient)(call)
    return Estimate({k: int(MARGIN * v) for k, v in parts.items()},
                    {k: int(MARGIN * v) for k, v in call.host.items()})


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _cgroup_free() -> int | None:
    """Bytes this process's cgroup may still use (its limit less its usage), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2
            pairs = [("memory.max", "memory.current")]
            folders = [root / rel, root]
        elif "memory" in controllers.split(","):
            pairs = [("memory.limit_in_bytes", "memory.usage_in_bytes")]
            folders = [root / "memory" / rel, root / "memory"]
        else:
            continue
        for folder in folders:
            for limit_file, usage_file in pairs:
                limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
                if limit is not None and usage is not None and limit < 1 << 60:
                    return max(0, limit - usage)
    return None


def available_bytes(device: torch.device | str) -> int | None:
    """Memory a new allocation on ``device`` can still get, or None where it is not known.

    CUDA: the device's free memory (``torch.cuda.mem_get_info``) plus what torch's caching
    allocator holds unused. CPU: ``MemAvailable`` of ``/proc/meminfo``, or less when the
    process's cgroup (a container's limit) leaves less.

    Args:
        device: the model's device.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device)
                   - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    group = _cgroup_free()
    known = [v for v in (free, group) if v is not None]
    return min(known) if known else None


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"310 GiB"`` / ``"21.3 GiB"`` / ``"512 MiB"``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def _advice(parts: Parts) -> str:
    """The parameters whose parts make up most of the estimate, largest first."""
    total = sum(parts.values())
    names = [k for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.1 * total]
    return " or ".join(names)


def check_call(model: ClipModel, method: str, params: Mapping[str, Any], pairs: int, side: str,
               ids: torch.Tensor) -> None:
    """Raise :class:`InsufficientMemoryError` (one line) when the call cannot fit in memory.

    Args:
        model: the model.
        method: the method's name.
        params: the method's parameters with defaults filled in.
        pairs: pairs in the call.
        side: ``"image"``, ``"text"`` or ``"both"``.
        ids: the token ids ``(B, C)`` of the call.
    """
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return
    need = estimate(model, method, params, pairs, side, ids)
    cpu = torch.device("cpu")
    for parts, device in ((need.parts, model.device), (need.host, cpu)):
        free = available_bytes(device)
        total = sum(parts.values())
        if free is None or total <= free:
            continue
        shown = [k for k in parts if k != PAIRS and k in params]
        knobs = ", ".join(f"{k}={params[k]}" for k in shown)
        where = "in RAM" if device.type == "cpu" else f"on {device}"
        raise InsufficientMemoryError(
            f"{method} with {knobs + ' and ' if knobs else ''}{pairs} pair(s) ({side} side) "
            f"needs about {format_bytes(total)} {where} on {model.name}; {format_bytes(free)} is "
            f"available: lower {_advice(parts)} (or set {ENV_SWITCH}=0 to run anyway)")
