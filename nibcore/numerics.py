"""How far one float computation may land from itself on another machine or numeric path.

The same attribution computed with another CPU instruction set (``ATEN_CPU_CAPABILITY``,
``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_CBWR``), another thread count or
another batch shape rounds differently: float32 results move by about 1e-7 to 1e-5 relative.
``scripts/measure_tolerances.py`` measures that spread on the results store's audit sample under
every path one machine can reach and writes it to ``data/results/tolerances.json`` (the audit's
tolerances; the table is in the README). The constants here are what the library and the tests
compare against; ``tests/test_tolerances.py`` checks that they cover the measured spread.
"""

from __future__ import annotations

import numpy as np
import torch

#: Relative float32 noise between two numeric paths of one computation (ISA, threads, batch
#: shape): the bound the tests use for quantities computed along different paths, and the
#: threshold under which a map's range is rounding (a constant map). Raw attribution maps of the
#: store's audit sample moved by at most 3.3e-5 of their largest magnitude across eight numeric
#: paths (``tolerances.json``: ``raw_spread``; Chefer et al.'s map of a cue-world pair, the
#: product of attention gradients and attention); this is six times that (it was 1e-4 while the
#: largest spread measured was 1.4e-5, before the cue world's models).
FLOAT_NOISE_RTOL = 2e-4


def span_is_noise(span: torch.Tensor | np.ndarray | float,
                  magnitude: torch.Tensor | np.ndarray | float):
    """Is a map's range ``span`` within float noise of its magnitude (``max |x|``)? Such a map is
    constant up to rounding: min-max normalising it would show rounding noise as structure, so
    normalisation, display and the metrics treat it as constant (degenerate)."""
    return span <= FLOAT_NOISE_RTOL * magnitude
