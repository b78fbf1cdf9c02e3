"""Curvature profiles of Mini-Unlearning's history, behind one registry (a new profile is one module here).

* ``exact``   -- (H_D + lambda M)^-1, dense or packed, float64 or float32 (p^2 .. p^2/2 numbers)
* ``classblock`` -- exact curvature of each class's own weights, one (d+1) x (d+1) block per class
* ``kron``    -- exact curvature in the top-k feature directions, C x C blocks in the others
* ``minimal`` -- top-k eigenpairs and the diagonal (at most 64 vectors of p)
"""

from miniunlearn.history.profiles import classblock, exact, kron, minimal  # noqa: F401  (registration)
from miniunlearn.history.profiles.interface import (
    CurvatureProfile,
    available_profiles,
    choose_by_budget,
    make_profile,
    profile_class,
    register,
)

__all__ = ["CurvatureProfile", "available_profiles", "choose_by_budget", "make_profile", "profile_class",
           "register"]
