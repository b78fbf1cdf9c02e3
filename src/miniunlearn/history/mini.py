"""Mini-Unlearning's minimal training record; its curvature profiles live in :mod:`.profiles`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import load_tensors, save_tensors
from miniunlearn.history.profiles import CurvatureProfile, available_profiles, choose_by_budget, make_profile
from miniunlearn.history.profiles.interface import DEFECT, profile_class
from miniunlearn.history.profiles.exact import ExactProfile, exact_inverse
from miniunlearn.models.objective import Objective
from miniunlearn.models.rows import max_squared_norm

PROFILES = tuple(available_profiles())
DEFAULT_MEMORY_BUDGET = 4 << 30  # bytes allowed for building a profile (the exact one: two p x p matrices)


def resolve_profile(requested: "str | CurvatureProfile", model, history_budget: int | None = None,
                    memory_budget: int = DEFAULT_MEMORY_BUDGET) -> CurvatureProfile:
    """The profile to build. ``auto``: with ``history_budget``, the most accurate profile whose stored
    bytes fit it; without, ``exact`` (stored as :meth:`ExactProfile.preferred` says) when its build fits
    ``memory_budget``, else the most accurate profile that fits ``memory_budget``. A named profile
    (``NAME[:key=value,...]``) must fit the budget when one is given."""
    if requested == "auto":
        if history_budget is None:
            exact = ExactProfile.preferred(model)
            if exact.build_bytes(model) <= memory_budget:
                return exact
            return choose_by_budget(model, memory_budget, memory_budget)
        return choose_by_budget(model, history_budget, memory_budget)
    profile = make_profile(requested)
    if history_budget is not None and profile.stored_bytes(model) > history_budget:
        raise InputError(f"history profile {profile.spec()} needs {profile.stored_bytes(model)} bytes for "
                         f"{model.n_params} parameters, more than the history budget of {history_budget}")
    return profile


@dataclass
class MiniHistory:
    """The minimal record (docs/mini-unlearning.md; all tensors float64 unless stated)."""

    profile: str
    theta: torch.Tensor       # w_T
    grad_sum: torch.Tensor    # G_D(w_T) = sum_i grad l_i(w_T), no regulariser
    n: int
    l2: float
    fingerprint: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    penalize_intercept: bool = True
    loss_sum: float | None = None  # L_D(w_T) = sum_i l_i(w_T): F_R(w_T) from the forgotten rows alone
    options: dict = field(default_factory=dict)  # the profile's options (its module documents the tensors)
    max_row_norm: float | None = None  # max_i ||x_i|| over the training rows (bounds every retained row's norm)

    def curvature_profile(self) -> CurvatureProfile:
        return profile_class(self.profile)(**self.options)

    @property
    def is_exact(self) -> bool:
        return profile_class(self.profile).exact

    @property
    def curvature_defect(self) -> float | None:
        """A bound on ||(H_D + lambda M) P - I||_2 measured at build (exact profiles built in float64), or None."""
        defect = self.tensors.get(DEFECT)
        return None if defect is None else float(defect)

    @property
    def curvature_eps(self) -> float:
        """The machine epsilon of the coarsest precision the curvature profile is stored in."""
        return max((torch.finfo(t.dtype).eps for t in self.tensors.values() if t.is_floating_point()),
                   default=torch.finfo(torch.float64).eps)

    @property
    def profile_bytes(self) -> int:
        """Bytes of the curvature profile's tensors alone."""
        return int(sum(t.numel() * t.element_size() for t in self.tensors.values()))

    def preconditioner(self, penalty):
        """``v -> P v``, P ~= (H_D + lambda M)^-1 from the stored profile."""
        return self.curvature_profile().preconditioner(self.tensors, penalty)

    @property
    def nbytes(self) -> int:
        tensors = [self.theta, self.grad_sum, *self.tensors.values()]
        scalars = sum(8 for v in (self.loss_sum, self.max_row_norm) if v is not None)
        return int(sum(t.numel() * t.element_size() for t in tensors)) + scalars

    def save(self, path: str | Path) -> int:
        tensors = {"theta": self.theta, "grad_sum": self.grad_sum, **self.tensors}
        if self.loss_sum is not None:
            tensors["loss_sum"] = torch.tensor(self.loss_sum, dtype=torch.float64)
        if self.max_row_norm is not None:
            tensors["max_row_norm"] = torch.tensor(self.max_row_norm, dtype=torch.float64)
        meta = {"format": "miniunlearn-history/1", "profile": self.profile, "n": self.n, "l2": repr(self.l2),
                "fingerprint": self.fingerprint, "penalize_intercept": str(self.penalize_intercept),
                "profile_options": json.dumps(self.options, sort_keys=True)}
        return save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "MiniHistory":
        tensors, meta = load_tensors(path, "Mini-Unlearning history")
        if meta.get("format") != "miniunlearn-history/1":
            raise RunError(f"{path} is not a Mini-Unlearning history file (format {meta.get('format')!r})")
        profile = meta.get("profile")
        try:
            needed = profile_class(profile).tensor_names
            options = json.loads(meta.get("profile_options", "{}"))
            profile_class(profile)(**options)
        except (InputError, ValueError, TypeError):
            raise RunError(f"history {path} has unknown curvature profile {profile!r} or invalid options") from None
        missing = [k for k in ("theta", "grad_sum", *needed) if k not in tensors]
        if missing:
            raise RunError(f"history {path} is incomplete: missing {', '.join(missing)}")
        for name, t in tensors.items():
            # one reduction instead of a boolean copy of a p x p matrix: NaN/inf propagate into the sum
            if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
                raise RunError(f"history {path} is corrupted: tensor {name!r} holds NaN or inf")
        theta, grad_sum = tensors.pop("theta"), tensors.pop("grad_sum")
        loss_sum = tensors.pop("loss_sum", None)
        max_row_norm = tensors.pop("max_row_norm", None)
        return cls(profile, theta, grad_sum, int(meta["n"]), float(meta["l2"]), meta["fingerprint"], tensors,
                   penalize_intercept=meta.get("penalize_intercept", "True") == "True",
                   loss_sum=None if loss_sum is None else float(loss_sum), options=options,
                   max_row_norm=None if max_row_norm is None else float(max_row_norm))


def exact_curvature(objective: Objective, theta: torch.Tensor, dtype: torch.dtype = torch.float64) -> dict:
    """The exact profile's tensors, dense: ``precond = (H_D + lambda I)^-1`` in ``dtype``."""
    return {"precond": exact_inverse(objective, theta, torch.float32).to(dtype)}


def build_mini_history(objective: Objective, theta: torch.Tensor, profile: "str | CurvatureProfile", fingerprint: str,
                       curvature_dtype: torch.dtype = torch.float64, minimal_rank: int | None = None,
                       ) -> MiniHistory:
    """Record w_T, G_D(w_T), L_D(w_T) and the curvature of ``profile`` at w_T (one gradient pass + its build).

    ``profile``: a profile or ``NAME[:key=value,...]``; ``curvature_dtype`` (exact) and
    ``minimal_rank`` (minimal) are shorthands for those profiles' options.
    """
    if isinstance(profile, str):
        options = {}
        if profile == "exact" and curvature_dtype != torch.float64:
            options["dtype"] = str(curvature_dtype).replace("torch.", "")
        if profile == "minimal" and minimal_rank is not None:
            options["rank"] = minimal_rank
        profile = make_profile(profile, **options)
    start = time.perf_counter()
    loss_sum, grad_sum = objective.rows.map_reduce(lambda X, y: objective.model.loss_grad_sum(theta, X, y))
    row_norm = objective.rows.map_reduce(lambda X, y: max_squared_norm(X), reduce=max) ** 0.5
    tensors = profile.build(objective, theta)
    history = MiniHistory(profile.name, theta.clone(), grad_sum, objective.n, objective.l2, fingerprint, tensors,
                          penalize_intercept=objective.penalty.penalize_intercept, loss_sum=float(loss_sum),
                          options=dict(profile.options), max_row_norm=row_norm)
    history.info = {"build_time_s": time.perf_counter() - start, "profile_spec": profile.spec(),
                    **getattr(profile, "info", {})}
    return history
