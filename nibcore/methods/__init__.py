"""Attribution methods; importing this package registers each of them in ``nibcore.METHODS``."""

from . import nib  # noqa: F401
from . import chefer, fastig, gradcam, m2ib, mfaba, rise, saliency  # noqa: F401
from . import gradeclip, legrad  # noqa: F401  (beyond the paper)

#: The paper's line-up, NIB first then its seven baselines: the order of every results table and
#: of the results store's files.
PAPER_LINEUP = ("nib", "m2ib", "rise", "gradcam", "chefer", "saliency", "mfaba", "fastig")
