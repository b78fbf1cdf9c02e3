"""The estimator's in-memory state: no run directory, nothing written, everything a copy needs to forget.

A :class:`MemoryBase` holds the training rows (features as the model sees them, class numbers,
keys), Mini-Unlearning's history at the base model w_T (:class:`~miniunlearn.history.MiniHistory`:
w_T, G_D(w_T), L_D(w_T) and the curvature profile) and the rows forgotten since. It is plain data
(numpy arrays, torch tensors), so pickling (by any library) and ``copy.deepcopy`` carry all of
it and a copy forgets exactly like the original.

A deletion solves, from the base, for the optimum of the objective on the kept rows,

    F_R(w) = (1/|R|) sum_{i in R} l(w; x_i, y_i) + (alpha/2) w^T M w,

with the same method and certificate as ``miniunlearn forget`` (:mod:`miniunlearn.methods.mini`;
docs/mini-unlearning.md): the exact Newton step from the stored curvature, then certified
Newton-CG on F_R until the proven bound on ||w - w_R|| is at most ``tol * ||w - w_T||``.
Requests are cumulative: each one forgets the union of every row forgotten since the base.

:func:`rebase` makes a new base -- the optimum on given rows, warm-started, with the history
rebuilt there: compaction (the same features, forgotten rows dropped) and the pipeline's
re-solve on features its transformers recomputed (:mod:`miniunlearn.estimator.pipeline`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from miniunlearn.core.errors import ConvergenceError, InputError
from miniunlearn.data import Dataset
from miniunlearn.history import build_mini_history, resolve_profile
from miniunlearn.history.mini import DEFAULT_MEMORY_BUDGET, MiniHistory
from miniunlearn.methods.interface import UnlearnContext
from miniunlearn.estimator import dense
from miniunlearn.methods.mini import STEP0_MAX_SHARE, MiniUnlearning
from miniunlearn.models import LogisticRegression, Objective, Rows
from miniunlearn.models.penalty import Penalty
from miniunlearn.solvers.certificate import self_concordance_constant
from miniunlearn.solvers.certified_newton import certified_newton_cg
from miniunlearn.solvers.newton import DEFAULT_TOL as TRAIN_TOL
from miniunlearn.solvers.newton import newton_cg
from miniunlearn.training.config import DEFAULT_CHUNK_ROWS

DENSE_STEPS = 5        # Newton or chord steps the dense route tries before the general method takes over
CHORD_MAX_SPAN = 0.1   # reuse a Hessian factor for the next step while the last step moved logits less than this
# the certified solver's own words when a tolerance is finer than floating point can prove
ROUNDING_STOP = "the tolerance is below what floating-point arithmetic can certify here"


@dataclass
class MemoryRun:
    """What an unlearning method reads from a run (:class:`~miniunlearn.methods.interface.UnlearnContext`),
    held in memory."""

    model: LogisticRegression
    dataset: Dataset
    l2: float
    penalize_intercept: bool
    history: MiniHistory
    mode: str = "converged"
    config: dict = field(default_factory=lambda: {"chunk_rows": DEFAULT_CHUNK_ROWS})

    @property
    def n_train(self) -> int:
        return self.dataset.n_train

    def mini_history(self) -> MiniHistory:
        return self.history

    def theta(self) -> torch.Tensor:
        return self.history.theta


@dataclass
class MemoryBase:
    """Training rows, the history at the base model, and the current model (see the module docstring)."""

    dataset: Dataset                  # X_train: the model's features (float32 values), y_train: class numbers
    penalty_l2: float
    penalize_intercept: bool
    history: MiniHistory
    theta: torch.Tensor               # the current model (w_T until a row is forgotten)
    forgotten: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted row ids
    generation: int = 0               # bases made by compaction (or a pipeline's re-solve) since the fit
    has_keys: bool = False
    raw: np.ndarray | None = None     # the raw features, kept when the estimator standardises (see ``standardize``)

    @property
    def model(self) -> LogisticRegression:
        return LogisticRegression(self.dataset.n_features, self.dataset.n_classes)

    @property
    def penalty(self) -> Penalty:
        return Penalty(self.model, self.penalty_l2, self.penalize_intercept)

    @property
    def n_rows(self) -> int:
        return self.dataset.n_train

    def kept_mask(self) -> np.ndarray:
        kept = np.ones(self.n_rows, dtype=bool)
        kept[self.forgotten] = False
        return kept

    def run(self) -> MemoryRun:
        return MemoryRun(self.model, self.dataset, self.penalty_l2, self.penalize_intercept, self.history)


def as_dense(X) -> np.ndarray:
    """A dense array of ``X`` (a sparse matrix is expanded: n x d floats)."""
    return X.toarray() if sp.issparse(X) else X


def solve(model: LogisticRegression, rows: Rows, penalty: Penalty, theta0: torch.Tensor | None = None,
          max_iter: int = 100, tol: float = TRAIN_TOL) -> tuple[torch.Tensor, dict]:
    """The optimum of ``F`` on ``rows`` by line-search Newton-CG from ``theta0`` (zeros by default)
    to ``||grad F|| <= tol``; an unconverged solve is a :class:`ConvergenceError` (a RuntimeError)."""
    start = model.zeros() if theta0 is None else theta0.clone()
    if model.n_params <= dense.DENSE_MAX_PARAMS:
        theta, info = dense.fit(model, rows, penalty, start, tol, max_iter)
        if info["converged"]:
            return theta, info
        start = theta  # (not reached in practice: Newton-CG takes over from there)
    theta, solved = newton_cg(Objective(model, rows, penalty), start, tol, max_iter)
    theta = penalty.project(theta)  # zero-mean biases when they are free (the unique minimiser)
    if not solved.converged:
        raise ConvergenceError(f"Newton-CG stopped after {solved.iterations} iterations at ||grad F|| = "
                               f"{solved.grad_norm:.3e} > {tol:g}; raise max_iter or alpha")
    return theta, {**solved.as_dict(), "route": "newton-cg"}


def record_history(dataset: Dataset, penalty: Penalty, theta: torch.Tensor) -> MiniHistory:
    """Mini-Unlearning's history at ``theta`` (one gradient pass plus the curvature profile's build)."""
    model = LogisticRegression(dataset.n_features, dataset.n_classes)
    profile = resolve_profile("auto", model, None, DEFAULT_MEMORY_BUDGET)
    try:
        return build_mini_history(Objective(model, Rows(dataset.X_train, dataset.y_train), penalty), theta,
                                  profile, "in-memory")
    except torch.linalg.LinAlgError as exc:
        raise InputError(f"the curvature at the optimum is not positive definite in floating point (alpha = "
                         f"{penalty.l2:g} is too small for this data; {exc})") from None


def fit_base(dataset: Dataset, l2: float, penalize_intercept: bool, max_iter: int, has_keys: bool,
             theta0: torch.Tensor | None = None, generation: int = 0) -> tuple[MemoryBase, dict]:
    """Fit on every row of ``dataset`` and record the history there; returns the base and the fit's report."""
    model = LogisticRegression(dataset.n_features, dataset.n_classes)
    penalty = Penalty(model, l2, penalize_intercept)
    rows = Rows(dataset.X_train, dataset.y_train)
    started = time.perf_counter()
    theta, info = solve(model, rows, penalty, theta0, max_iter)
    solved = time.perf_counter()
    history = record_history(dataset, penalty, theta)
    report = {**info, "time_s": solved - started, "history_time_s": time.perf_counter() - solved,
              "history_profile": history.profile, "history_bytes": history.nbytes}
    return MemoryBase(dataset, float(l2), bool(penalize_intercept), history, theta.clone(), generation=generation,
                      has_keys=has_keys), report


def forget_rows(base: MemoryBase, ids: np.ndarray, tol: float, max_passes: int) -> tuple[torch.Tensor, dict]:
    """The model that forgot ``ids`` and every row forgotten before, certified to ``tol``; the base is
    not changed (the caller commits the result). A tolerance the solver cannot certify in
    ``max_passes`` passes over the kept rows is a :class:`ConvergenceError`; a tolerance below what
    floating point can certify is met at that floor (``stats["rounding_floor"]``)."""
    cumulative = np.union1d(base.forgotten, ids)
    context = UnlearnContext(base.run(), cumulative)
    started = time.perf_counter()
    found = _dense_forget(base, context, tol)
    if found is not None:
        theta, stats = found
    else:
        # the same context: its pass counts then include the general method's (and any the dense route spent)
        theta, stats = MiniUnlearning(tol=tol, max_passes=max_passes).unlearn(context)
    stats = {**stats, "time_s": time.perf_counter() - started, "n_forget": int(len(cumulative)), "n_forget_request": int(len(ids)),
             "n_forgotten_before": int(len(base.forgotten)), "passes_retained": context.passes_retained,
             "passes_forget": context.passes_forget}
    at_floor = stats.get("refine_stop") == ROUNDING_STOP
    stats["rounding_floor"] = at_floor
    if not stats.get("converged", False) and not at_floor:
        raise ConvergenceError(f"forget did not reach tol {tol:g}: {stats.get('failure', stats.get('refine_stop'))}; "
                               "nothing was changed")
    if not torch.isfinite(theta).all():
        raise ConvergenceError("forget produced non-finite parameters; nothing was changed")
    return theta, stats


def _dense_forget(base: MemoryBase, context: UnlearnContext, tol: float) -> tuple[torch.Tensor, dict] | None:
    """The dense route (:mod:`miniunlearn.estimator.dense`): step 0, then at most DENSE_STEPS Newton or
    chord steps on F_R, each certified; None when it does not apply or does not certify (the general
    method then runs)."""
    history, model = base.history, base.model
    r, m = len(context.forget_ids), base.n_rows - len(context.forget_ids)
    if model.n_params > dense.DENSE_MAX_PARAMS or not history.is_exact or r > m * STEP0_MAX_SHARE:
        return None
    if not base.penalize_intercept and len(np.unique(base.dataset.y_train[context.retained_ids])) < model.n_classes:
        return None  # (the general method refuses it with its own message)
    penalty = base.penalty
    w = dense.step0(context, history, penalty)
    objective = Objective(model, context.retained_rows, penalty)
    step = None
    for newton in range(1, DENSE_STEPS + 1):
        # the previous point's factor is kept while its curvature still describes this point (a small span)
        chord = step is not None and step["span"] <= CHORD_MAX_SPAN
        step = dense.chord_step(objective, w, step) if chord else dense.dense_newton(objective, w)
        w = penalty.project(step["w"])
        moved = float((w - history.theta).norm())
        if step["certificate"] <= tol * moved:
            return w, {"route": "dense", "start": "step 0", "newton_iterations": newton,
                       "certificate": step["certificate"], "certified_relative": step["certificate"] / moved,
                       "converged": True, "refine_stop": "certified", "curvature_profile": history.profile}
    return None


def subset(dataset: Dataset, kept: np.ndarray, X: np.ndarray | None = None) -> Dataset:
    """``dataset``'s rows ``kept`` (a mask), with features ``X`` instead of its own when given."""
    keys = None if dataset.keys is None else dataset.keys[kept]
    features = dataset.X_train[kept] if X is None else X
    return dataclasses.replace(dataset, X_train=np.ascontiguousarray(features), y_train=dataset.y_train[kept],
                               keys=keys, _fingerprint=[])


def rebase(base: MemoryBase, dataset: Dataset, start: torch.Tensor, tol: float, max_iter: int = 100
           ) -> tuple[MemoryBase, dict]:
    """A new base on ``dataset`` (the kept rows, possibly on new features): the objective there solved
    from ``start``, certified, and its history recorded. Reports the certificate of the solve."""
    model = LogisticRegression(dataset.n_features, dataset.n_classes)
    penalty = Penalty(model, base.penalty_l2, base.penalize_intercept)
    present = np.unique(dataset.y_train)
    if not base.penalize_intercept and len(present) < dataset.n_classes:
        raise InputError(f"with an unpenalised intercept every class needs a kept row; only {len(present)} of "
                         f"{dataset.n_classes} classes remain")
    started = time.perf_counter()
    rows = Rows(dataset.X_train, dataset.y_train)
    theta, solved = solve(model, rows, penalty, penalty.project(start), max_iter)
    # certify the optimum found (Newton-CG's stop, ||grad F|| <= 1e-9, proves nothing without the curvature)
    objective = Objective(model, rows, penalty)
    here = objective.curvature(theta, diag=True, value=True, row_norm=True)
    result = certified_newton_cg(objective, None, theta, start, R=self_concordance_constant(here.cache.max_row_norm),
                                 tol=tol, max_passes=50, start=here)
    certified = time.perf_counter()
    history = record_history(dataset, penalty, result.w)
    moved = float((result.w - start).norm())
    stats = {"newton_iterations": solved["iterations"], "certificate": result.certificate,
             "certified_relative": result.certificate / moved if moved > 0 else float("inf"),
             "converged": result.converged or result.stop == ROUNDING_STOP, "time_s": certified - started,
             "history_time_s": time.perf_counter() - certified}
    new = MemoryBase(dataset, base.penalty_l2, base.penalize_intercept, history, result.w.clone(),
                     generation=base.generation + 1, has_keys=base.has_keys)
    return new, stats


MAP_ROWS = 4096  # rows used to map a model to new features (a warm start: a sample suffices)


def mapped_start(Z: np.ndarray, logits: np.ndarray) -> torch.Tensor:
    """``[W | b]`` (flat) minimising ``||[Z, 1] [W | b]^T - logits||`` (minimum norm; every
    ``len(Z) // 4096``-th row): the model on features Z closest to given per-row logits."""
    step = max(1, len(Z) // MAP_ROWS)
    design = np.hstack([Z[::step], np.ones((len(Z[::step]), 1))])
    solution, *_ = np.linalg.lstsq(design, logits[::step], rcond=None)
    return torch.from_numpy(np.ascontiguousarray(solution.T).reshape(-1))
