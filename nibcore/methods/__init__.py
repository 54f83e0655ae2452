"""Attribution methods; importing this package registers each of them in ``nibcore.METHODS``."""

from . import nib  # noqa: F401
from . import chefer, fastig, gradcam, m2ib, mfaba, rise, saliency  # noqa: F401
from . import gradeclip, legrad  # noqa: F401  (beyond the paper)
