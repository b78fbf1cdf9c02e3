"""What training records for later unlearning, and how it is stored (safetensors, never pickle).

* :class:`MiniHistory` -- Mini-Unlearning's minimal record (docs/mini-unlearning.md): the final parameters
  w_T, the full-data gradient sum G_D(w_T) and a curvature model at w_T, in one of the profiles of
  :mod:`miniunlearn.history.profiles` (``exact``: the inverse of the dense mean loss Hessian + lambda I,
  dense or packed, float64 or float32; ``classblock``: one exact block per class; ``kron``: structured;
  ``minimal``: at most 64 vectors of p).
* :class:`DeltaGradHistory` -- DeltaGrad's full record: w_t and g_t for every SGD iteration.
"""

from miniunlearn.history.deltagrad import DeltaGradHistory
from miniunlearn.history.mini import MiniHistory, build_mini_history, resolve_profile

__all__ = ["MiniHistory", "DeltaGradHistory", "build_mini_history", "resolve_profile"]
