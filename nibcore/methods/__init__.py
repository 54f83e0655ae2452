"""Attribution methods; importing this package registers each of them in ``nibcore.METHODS``."""

from . import nib  # noqa: F401
