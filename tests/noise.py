"""Comparisons of quantities computed along different numeric paths (batch shape, chunking,
instruction set, threads): never tighter than the float noise measured between such paths
(:data:`nibcore.numerics.FLOAT_NOISE_RTOL`). Bit-equality is asserted only where a test runs
literally the same computation twice."""

import numpy as np
import torch

from nibcore.numerics import FLOAT_NOISE_RTOL


def assert_paths_close(actual, expected, rtol: float = FLOAT_NOISE_RTOL) -> None:
    """``actual`` equals ``expected`` within ``rtol`` relative per entry, and within the float
    noise of the largest magnitude of ``expected`` for entries near zero (a float's noise is
    relative to the magnitudes it was computed from, not to its own value)."""
    def arr(x):
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
        return np.asarray(x, dtype=np.float64)

    a, e = arr(actual), arr(expected)
    scale = float(np.abs(e).max()) if e.size else 0.0
    np.testing.assert_allclose(a, e, rtol=rtol, atol=FLOAT_NOISE_RTOL * scale)
