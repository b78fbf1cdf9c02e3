"""``UnlearningLogisticRegression``: a scikit-learn classifier that can forget rows it was trained on.

The model is multinomial logistic regression fitted to the unique optimum of

    F(w) = (1/n) sum_i -log softmax(W x_i + b)_{y_i} + (alpha/2) ||W||^2      (+ (alpha/2)||b||^2
                                                                               with penalize_intercept)

scikit-learn's ``LogisticRegression(C=C)`` (free intercept, its default) minimises
``C sum_i loss_i + ||W||^2 / 2``: the same objective for ``C = 1/(n alpha)`` with three or more
classes, and ``C = 2/(n alpha)`` with two -- the softmax keeps one weight row per class, the
optimum has ``w_1 = -w_0``, and scikit-learn's single row ``w_1 - w_0`` then carries the penalty
``(alpha/4)||w_1 - w_0||^2`` (docs/sklearn.md derives it and checks it).

Fit and forget run in memory (:mod:`miniunlearn.estimator.memory`): nothing is written, and a
pickled (by any library) or deep-copied estimator carries the rows, history and model it needs
to forget. :meth:`~UnlearningLogisticRegression.save` writes a run directory (the CLI reads it:
``ledger``, ``predict``, ``forget``) and binds the estimator to it: later requests are recorded in
its deletion ledger, and copies of the bound estimator share the directory.

``coef_`` and ``intercept_`` act on raw features (the optional standardisation is folded in):
``decision_function(X) = X coef_^T + intercept_``.
"""

from __future__ import annotations

import shutil
import tempfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.progress import disabled as progress_disabled
from miniunlearn.core.storage import atomic_write_json, read_json
from miniunlearn.data import Dataset
from miniunlearn.data.keys import canonical
from miniunlearn.estimator import memory
from miniunlearn.estimator.requests import as_list, check_not_everything, requested_rows, row_numbers
from miniunlearn.runs import LOCK_FILE, Run, train
from miniunlearn.runs.predict import Predictor
from miniunlearn.service import Ledger, forget
from miniunlearn.service.compact import compact as compact_fn

ESTIMATOR_JSON = "estimator.json"
ESTIMATOR_FORMAT = "miniunlearn-estimator/1"
UNLEARNED_DIR = "unlearned"
COMPACT_AUTO_SHARE = 0.10  # compact="auto": once this share of the base's rows is forgotten


def _softmax_logits(scores: np.ndarray) -> np.ndarray:
    """Per-class logits from ``decision_function`` scores: a binary score d is the logits (-d/2, d/2)
    (the optimum's two softmax rows are opposite when the penalty is symmetric)."""
    return np.stack([-scores / 2, scores / 2], axis=1) if scores.ndim == 1 else scores


class UnlearningLogisticRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression that forgets training rows on request (see the module docstring).

    Parameters
    ----------
    alpha : float, default=1e-3
        L2 strength lambda of ``mean loss + (alpha/2)||W||^2`` (scikit-learn's ``C = 1/(n alpha)``,
        ``2/(n alpha)`` with two classes).
    tol : float, default=1e-6
        Tolerance of :meth:`forget`: the proven bound on the distance to retraining is at most
        ``tol * ||w - w_T||`` (overridable per call).
    penalize_intercept : bool, default=False
        Penalise the biases like the weights (False: a free intercept, as scikit-learn fits it).
    standardize : bool, default=False
        Centre and scale the features by the training rows' mean and standard deviation, recomputed
        on the kept rows by every in-memory :meth:`forget`, as a refit would (each such forget then
        makes a new base: row numbers count the kept rows). A saved estimator keeps its base's
        statistics until it is compacted, as the command line does.
    max_iter : int, default=100
        Newton iterations at most for a fit (it stops at ``||grad F|| <= 1e-9``).
    max_passes : int, default=1000
        Passes over the kept rows at most for one :meth:`forget` (overridable per call).
    compact : {"never", "auto", "always"}, default="never"
        After a forget, make the model the exact optimum on the kept rows and drop the forgotten
        rows from memory (or from the saved directory): always, never, or once 10 % are forgotten.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
        With three or more classes and a free intercept, the intercepts summing to zero (a common
        shift changes no probability).
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (only when fitted on a DataFrame with string column names)
    n_iter_ : ndarray of shape (1,) -- Newton iterations of the fit
    run_dir_ : pathlib.Path or None -- the saved directory the estimator is bound to (None: in memory)
    forget_stats_ : dict -- the latest :meth:`forget`: certificate, time, rows forgotten, passes
    """

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "tol": [Interval(Real, 0, 1, closed="neither")],
        "penalize_intercept": ["boolean"],
        "standardize": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_passes": [Interval(Integral, 1, None, closed="left")],
        "compact": [StrOptions({"never", "auto", "always"})],
    }

    def __init__(self, alpha=1e-3, tol=1e-6, penalize_intercept=False, standardize=False, max_iter=100,
                 max_passes=1000, compact="never"):
        self.alpha = alpha
        self.tol = tol
        self.penalize_intercept = penalize_intercept
        self.standardize = standardize
        self.max_iter = max_iter
        self.max_passes = max_passes
        self.compact = compact

    # ---------------------------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, keys=None):
        """Fit to the rows of ``X`` (array, CSR matrix or DataFrame) with labels ``y``.

        ``keys`` name the rows (e.g. user ids; several rows may share a key) for
        ``forget(keys=...)``. Without them the estimator has no keys and forgets by row number
        only (``forget(rows=...)``). Features are rounded to float32, the precision a saved
        directory stores them in; sparse input is held densely (n_samples x n_features floats).
        """
        X, y = validate_data(self, X, y, dtype=np.float64, accept_sparse="csr")
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, but the data "
                             f"contain only one class: {classes[0]!r}")
        self.classes_ = classes
        dataset = self._dataset(X, y, keys)
        self._memory, report = memory.fit_base(dataset, self.alpha, self.penalize_intercept, self.max_iter,
                                               has_keys=keys is not None)
        if self.standardize:
            self._memory.raw = memory.as_dense(X)  # the statistics are recomputed on the kept rows by every forget
        self.fit_stats_ = report
        self.n_iter_ = np.asarray([int(report.get("iterations", 0))])
        self.run_dir_ = None
        self.forget_stats_ = None
        self._use_theta(dataset.preprocessing, self._memory.theta)
        return self

    def _dataset(self, X, y, keys, names="fitted") -> Dataset:
        if names == "fitted":
            names = getattr(self, "feature_names_in_", None)
        return Dataset.from_arrays(memory.as_dense(X), y, ids=keys, standardize=bool(self.standardize),
                                   feature_names=None if names is None else list(names), name="estimator")

    def _use_theta(self, preprocessing, theta: torch.Tensor) -> None:
        """Make ``theta`` (on the model's features) the estimator's model, on raw features."""
        n_classes = len(self.classes_)
        matrix = theta.detach().numpy().reshape(n_classes, -1)
        self._weight, self._bias = preprocessing.raw_linear(matrix[:, :-1], matrix[:, -1])
        self._publish()

    def _use_model(self, model_dir: Path) -> None:
        """Make the model saved in ``model_dir`` the estimator's."""
        predictor = Predictor.load(model_dir)
        linear = predictor.model.to_linear(predictor.theta)
        self._weight, self._bias = predictor.preprocessing.raw_linear(linear["weight"].numpy(), linear["bias"].numpy())
        self._publish()

    def _publish(self) -> None:
        weight, bias = self._weight, self._bias
        if len(weight) == 2:  # scikit-learn's binary convention: one row, class 1 against class 0
            self.coef_, self.intercept_ = (weight[1] - weight[0])[None, :], np.asarray([bias[1] - bias[0]])
        else:
            self.coef_, self.intercept_ = weight.copy(), bias.copy()

    # ---------------------------------------------------------------------------------------- predict
    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, accept_sparse="csr")
        return np.asarray(safe_sparse_dot(X, self._weight.T)) + self._bias

    def decision_function(self, X):
        """Class scores ``W x + b``, or for two classes the score of class 1 over class 0."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        return Predictor.softmax(self._logits(X))

    def predict_log_proba(self, X):
        logits = self._logits(X)
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    def predict(self, X):
        codes = self._logits(X).argmax(axis=1)  # (first: it checks that the estimator is fitted)
        return self.classes_[codes]

    # ---------------------------------------------------------------------------------------- forget
    def forget(self, rows=None, keys=None, tol=None, max_passes=None, compact=None):
        """Forget training rows -- by key (``keys``; a scalar is one key) or by row number (``rows``) -- in
        place; returns self.

        Requests are cumulative (rows forgotten before stay forgotten). The result is certified:
        ``forget_stats_["certificate"]`` bounds ``||w - w_R||`` (all parameters, on the model's
        features) for the optimum w_R of the kept rows, and is at most ``tol * ||w - w_T||``.
        ``tol``, ``max_passes`` and ``compact`` default to the estimator's. Bad requests raise
        ``ValueError``; a tolerance not reached raises ``RuntimeError`` and changes nothing. When it
        compacts, row numbers start again at 0 over the kept rows (keys do not change).
        """
        check_is_fitted(self)
        options = self._forget_options(tol, max_passes, compact)
        if self.run_dir_ is not None:
            return self._forget_saved(rows, keys, options)
        base = self._memory
        train_keys = base.dataset.keys if base.has_keys else None
        ids = requested_rows(rows, keys, train_keys, base.n_rows, base.forgotten)
        check_not_everything(ids, base.forgotten, base.n_rows)
        if self.standardize:
            stats = self._restandardize(np.union1d(base.forgotten, ids), options["tol"])
        else:
            theta, stats = memory.forget_rows(base, ids, options["tol"], options["max_passes"])
            base.forgotten = np.union1d(base.forgotten, ids)
            base.theta = theta
            stats["compaction"] = self._maybe_compact(options)
            self._use_theta(self._memory.dataset.preprocessing, self._memory.theta)
        self.forget_stats_ = {**stats, "tol": options["tol"]}
        return self

    def kept_after(self, rows=None, keys=None) -> np.ndarray:
        """The training rows that would be kept after forgetting ``rows`` or ``keys`` (a boolean mask over
        the estimator's training rows, rows forgotten before included); bad requests raise ``ValueError``.
        Changes nothing (:func:`~miniunlearn.estimator.pipeline.forget_pipeline` asks it first)."""
        check_is_fitted(self)
        base = self._in_memory("kept_after")
        ids = requested_rows(rows, keys, base.dataset.keys if base.has_keys else None, base.n_rows, base.forgotten)
        check_not_everything(ids, base.forgotten, base.n_rows)
        kept = base.kept_mask()
        kept[ids] = False
        return kept

    def refit_on(self, X_kept, y_kept, kept: np.ndarray, logits: np.ndarray, tol=None, max_passes=None):
        """Make the optimum on new features ``X_kept`` of the kept rows (``kept``: a mask over the
        training rows, from :meth:`kept_after`) the model; returns self.

        The solve starts from the parameters whose logits on these rows best match ``logits``
        (least squares on up to 4096 rows; the current model's logits on the old features map it
        exactly when the features changed affinely), is certified (``forget_stats_["certificate"]``)
        and becomes the new base (history recorded there; row numbers count the kept rows). Nothing
        changes if it fails. What a pipeline's forget runs after refitting its transformers.
        """
        check_is_fitted(self)
        base = self._in_memory("refit_on")
        options = self._forget_options(tol, max_passes, None)
        keys = base.dataset.keys[kept] if base.has_keys else None
        names = [str(c) for c in X_kept.columns] if hasattr(X_kept, "columns") else None
        dataset = self._dataset(X_kept, y_kept, keys, names)
        if dataset.n_classes != len(self.classes_):
            raise InputError(f"forget: after this request only {dataset.n_classes} of the {len(self.classes_)} "
                             "classes would have a kept row")
        start = memory.mapped_start(dataset.X_train, _softmax_logits(np.asarray(logits, dtype=np.float64)))
        new, stats = memory.rebase(base, dataset, start, options["tol"], self.max_iter)
        new.raw = memory.as_dense(X_kept) if self.standardize else None
        validate_data(self, X_kept, reset=True, dtype=np.float64, accept_sparse="csr")  # n_features_in_, names
        self._memory = new
        self._use_theta(dataset.preprocessing, new.theta)
        gone = int((~kept).sum())
        self.forget_stats_ = {**stats, "n_forget": gone, "n_forget_request": gone - int(len(base.forgotten)),
                              "rows_dropped": gone, "tol": options["tol"]}
        return self

    def _in_memory(self, what: str):
        if self.run_dir_ is not None:
            raise InputError(f"{what}: this estimator is bound to the saved directory {self.run_dir_}; forget through "
                             "a pipeline before saving, or forget with the estimator alone")
        return self._memory

    def _forget_options(self, tol, max_passes, compact) -> dict:
        options = {"tol": self.tol if tol is None else tol, "max_passes": self.max_passes if max_passes is None else max_passes,
                   "compact": self.compact if compact is None else compact}
        validate_parameter_constraints({k: self._parameter_constraints[k] for k in options}, options, "forget")
        return options

    def _maybe_compact(self, options) -> dict | None:
        base = self._memory
        due = options["compact"] == "always" or (
            options["compact"] == "auto" and len(base.forgotten) >= COMPACT_AUTO_SHARE * base.n_rows)
        return self._compact_memory() if due else None

    def _compact_memory(self) -> dict:
        base = self._memory
        kept = base.kept_mask()
        dataset = memory.subset(base.dataset, kept)
        self._memory, stats = memory.rebase(base, dataset, base.theta, self.tol, self.max_iter)
        stats.update(generation=self._memory.generation, rows_dropped=int((~kept).sum()))
        return stats

    def _restandardize(self, forgotten: np.ndarray, tol: float) -> dict:
        """Forget with ``standardize``: the statistics of the kept rows, the model mapped to them (the
        same logits on every row), then solved and certified on the new features (a new base)."""
        base = self._memory
        kept = np.ones(base.n_rows, dtype=bool)
        kept[forgotten] = False
        raw = base.raw[kept]
        keys = base.dataset.keys[kept] if base.has_keys else None
        dataset = self._dataset(raw, base.dataset.preprocessing.decode(base.dataset.y_train[kept]), keys)
        if dataset.n_classes != len(self.classes_):
            raise InputError(f"forget: after this request only {dataset.n_classes} of the {len(self.classes_)} "
                             "classes would have a kept row")
        weight, bias = dataset.preprocessing.feature_linear(self._weight, self._bias)
        start = torch.from_numpy(np.hstack([weight, bias[:, None]]).reshape(-1).copy())
        self._memory, stats = memory.rebase(base, dataset, start, tol, self.max_iter)
        self._memory.raw = raw
        self._use_theta(dataset.preprocessing, self._memory.theta)
        return {**stats, "n_forget_request": int(len(forgotten) - len(base.forgotten)),
                "n_forget": int(len(forgotten)), "rows_dropped": int(len(forgotten)), "restandardized": True}

    def compact_run(self):
        """Compact now: the model becomes the exact optimum on the kept rows, the history is rebuilt
        there, and the forgotten rows are dropped (from memory, or from the saved directory's files);
        returns self (``compact_stats_``). Row numbers then count the kept rows only."""
        check_is_fitted(self)
        if self.run_dir_ is None:
            self.compact_stats_ = self._compact_memory()
            self._use_theta(self._memory.dataset.preprocessing, self._memory.theta)
            return self
        run = self._run()
        with progress_disabled():
            self.compact_stats_ = compact_fn(run)
        self._use_model(run.path)
        return self

    def forgotten_keys(self) -> np.ndarray:
        """Keys whose rows are all forgotten since the last compaction (in memory), in key order."""
        check_is_fitted(self)
        if self.run_dir_ is not None:
            raise InputError("a saved estimator's forgotten keys are in its ledger: miniunlearn ledger DIR --forgotten-keys")
        base = self._memory
        if not base.has_keys:
            raise InputError("this estimator was fitted without keys")
        gone = np.unique(base.dataset.keys[base.forgotten])
        gone = gone[~np.isin(gone, base.dataset.keys[base.kept_mask()])]
        return gone if gone.dtype.kind in "iu" else np.asarray(canonical(gone), dtype=object)

    # -------------------------------------------------------------------------------- saved directory
    def _forget_saved(self, rows, keys, options):
        run = self._run()
        if keys is not None and getattr(run.base, "keys_record", None) is None:
            requested_rows(None, keys, None, run.n_train, np.zeros(0, dtype=np.int64))  # raises: no keys
        if keys is not None:
            keys = [str(k) for k in as_list(keys, "keys")]
        elif rows is not None:
            rows = row_numbers(as_list(rows, "rows"), run.n_train)
        out = self.run_dir_ / UNLEARNED_DIR / f"{len(_done_requests(run)) + 1:04d}"
        with progress_disabled():
            result = forget(run, rows, method="mini", out=out, keys=keys, tol=options["tol"],
                            max_passes=options["max_passes"], compact=options["compact"])
        self.forget_stats_ = {**result.stats, "tol": options["tol"]}
        self._use_model(_latest_model_dir(self._run()))
        return self

    def _run(self) -> Run:
        run_dir = getattr(self, "run_dir_", None)
        if run_dir is None or not Path(run_dir).is_dir():
            raise RunError(f"the saved directory {run_dir} of this estimator is gone; load() another one or fit again")
        return Run(run_dir)

    def save(self, path, overwrite: bool = False):
        """Write a run directory at ``path`` and bind the estimator to it; returns self.

        The directory holds the model, its history, the kept training rows (float32) and their
        keys, and a deletion ledger. Rows forgotten in memory before ``save`` are not written
        (the saved model is the optimum on the kept rows). Afterwards ``forget`` records every
        request in the directory's ledger, and copies of the estimator forget there. The
        directory is assembled beside ``path`` and renamed into place, never half-written.
        """
        check_is_fitted(self)
        target = Path(path).resolve()
        if self.run_dir_ is not None and Path(self.run_dir_).resolve() == target:
            return self
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise InputError(f"{target} exists and is not empty; choose another directory or pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            if self.run_dir_ is not None:
                shutil.copytree(self._run().path, staging / "run", ignore=shutil.ignore_patterns(LOCK_FILE, "*.tmp"))
            else:
                self._write_memory_run(staging / "run")
            if target.exists():
                shutil.rmtree(target)
            (staging / "run").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.run_dir_ = target
        self._memory = None
        self._use_model(_latest_model_dir(self._run()))
        return self

    def _write_memory_run(self, out: Path) -> None:
        base = self._memory
        dataset = memory.subset(base.dataset, base.kept_mask())
        with progress_disabled():
            train(dataset, self.alpha, out, max_iter=self.max_iter, penalize_intercept=self.penalize_intercept)
        atomic_write_json(out / ESTIMATOR_JSON, {"format": ESTIMATOR_FORMAT, "params": self.get_params()})

    @classmethod
    def load(cls, path) -> "UnlearningLogisticRegression":
        """An estimator bound to the run directory ``path`` (saved by :meth:`save` or trained by
        ``miniunlearn train``), with the run's latest model: the newest completed request that
        forgot every row forgotten so far. Reload after another process forgets there."""
        run = Run(path)
        params = {"alpha": run.l2, "penalize_intercept": bool(run.penalize_intercept)}
        if (run.path / ESTIMATOR_JSON).is_file():
            params.update(read_json(run.path / ESTIMATOR_JSON, ESTIMATOR_JSON).get("params", {}))
        estimator = cls(**{k: v for k, v in params.items() if k in cls._parameter_constraints})
        estimator._validate_params()
        estimator.run_dir_ = Path(path).resolve()
        estimator._memory = None
        estimator.forget_stats_ = None
        preprocessing = run.preprocessing
        estimator.classes_ = preprocessing.labels_array()
        estimator.n_features_in_ = run.model.n_features
        estimator.n_iter_ = np.asarray([int(run.meta.get("training", {}).get("iterations", 0))])
        if preprocessing.feature_names is not None:
            estimator.feature_names_in_ = np.asarray(preprocessing.feature_names, dtype=object)
        estimator._use_model(_latest_model_dir(run))
        return estimator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _done_requests(run) -> list:
    if not Ledger.exists(run):
        return []
    with Ledger.open(run) as book:
        return book.requests("done")


def _latest_model_dir(run) -> Path:
    """The newest completed request whose model forgot every row forgotten so far, else the run itself."""
    if not Ledger.exists(run):
        return run.path
    with Ledger.open(run) as book:
        forgotten = book.forgotten_ids()
        done = book.current_requests("done")  # computed from the current base (a compaction removed the others)
    if not done:
        return run.path  # the current base: the original model, or the exact optimum a compaction made
    current = [r for r in done if np.array_equal(r.cumulative_ids(), forgotten)]
    if not current:
        return run.path
    latest = current[-1]
    problem = latest.model_problem()
    if problem is not None:
        raise RunError(f"the run's latest unlearned model cannot be used: {problem}")
    return latest.out_path
