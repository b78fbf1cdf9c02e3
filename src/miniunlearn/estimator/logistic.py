"""``UnlearningLogisticRegression``: a scikit-learn classifier that can forget rows it was trained on.

The model is miniunlearn's multinomial logistic regression, fitted to the unique optimum of

    F(w) = (1/n) sum_i -log softmax(W x_i + b)_{y_i} + (alpha/2) ||w||^2

(``w`` = all weights and, with ``penalize_intercept=True``, the biases). scikit-learn's
``LogisticRegression(C=C)`` minimises ``sum_i loss_i + ||w||^2 / (2C)``, the same objective for
``C = 1/(n alpha)``. With two classes the softmax has two weight rows whose difference is
scikit-learn's single one, and the penalty splits between them (``w_1 = -w_0`` at the optimum),
so the binary model equals scikit-learn's with ``C = 2/(n alpha)``.

Every fit writes a run directory (:func:`miniunlearn.runs.train`; a temporary one until
:meth:`~UnlearningLogisticRegression.save`), so :meth:`~UnlearningLogisticRegression.forget` is a
deletion request like ``miniunlearn forget``: recorded in the run's ledger, computed by
Mini-Unlearning from the minimal history, cumulative over requests. ``save`` and ``load`` use
plain run directories -- the CLI reads them (``ledger``, ``predict``, ``forget``, ``evaluate``).

``coef_`` and ``intercept_`` act on raw features (the optional standardisation is folded in):
``decision_function(X) = X coef_^T + intercept_``.
"""

from __future__ import annotations

import shutil
import tempfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.params import Boolean, Interval, Options, Param, validate_params
from miniunlearn.core.progress import disabled as progress_disabled
from miniunlearn.core.storage import atomic_write_json, read_json
from miniunlearn.data import Dataset
from miniunlearn.runs import LOCK_FILE, Run, train
from miniunlearn.runs.predict import Predictor
from miniunlearn.service import Ledger, forget

ESTIMATOR_JSON = "estimator.json"
ESTIMATOR_FORMAT = "miniunlearn-estimator/1"
UNLEARNED_DIR = "unlearned"

PARAMETERS = {
    "alpha": Param(1e-3, Interval(Real, 0, 1e6, closed="right"),
                   help="L2 strength: F(w) = mean loss + (alpha/2)||w||^2 (scikit-learn's C = 1/(n alpha))"),
    "tol": Param(1e-6, Interval(Real, 0, 1, closed="neither"),
                 help="unlearning tolerance of forget(): how close to retraining the unlearned model must be"),
    "penalize_intercept": Param(True, Boolean(), help="include the biases in the L2 penalty"),
    "standardize": Param(False, Boolean(),
                         help="centre and scale features on the training rows (folded into coef_ and intercept_)"),
    "max_iter": Param(100, Interval(Integral, 1, 10_000), help="Newton iterations at most"),
    "compact": Param("never", Options(("never", "auto", "always")),
                     help="compaction policy of forget(): auto compacts once 10 % of the base's rows are forgotten "
                          "since the last compaction (miniunlearn.service.compact)"),
}


class UnlearningLogisticRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression that forgets training rows on request (see the module docstring).

    Parameters
    ----------
    alpha : float, default=1e-3
        L2 strength lambda of ``mean loss + (alpha/2)||w||^2``.
    tol : float, default=1e-6
        Unlearning tolerance used by :meth:`forget` (overridable per call).
    penalize_intercept : bool, default=True
        Whether the biases are penalised like the weights.
    standardize : bool, default=False
        Centre and scale the features by the training rows' mean and standard deviation.
    max_iter : int, default=100
        Newton iterations at most (training stops at ``||grad F|| <= 1e-9``).
    compact : {"never", "auto", "always"}, default="never"
        Compaction policy of :meth:`forget` (see :meth:`compact_run`).

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (only when fitted on a DataFrame with string column names)
    n_iter_ : ndarray of shape (1,) -- Newton iterations of the fit
    run_dir_ : pathlib.Path -- the run directory (temporary until :meth:`save`)
    forget_stats_ : dict -- statistics of the latest :meth:`forget` (time, certificate, rows forgotten)
    """

    def __init__(self, alpha=1e-3, tol=1e-6, penalize_intercept=True, standardize=False, max_iter=100,
                 compact="never"):
        self.compact = compact
        self.alpha = alpha
        self.tol = tol
        self.penalize_intercept = penalize_intercept
        self.standardize = standardize
        self.max_iter = max_iter

    # ---------------------------------------------------------------------------------------- fit
    def _options(self) -> dict:
        return validate_params(type(self).__name__, PARAMETERS, self.get_params())

    def fit(self, X, y, keys=None):
        """Fit to the rows of ``X`` (array or DataFrame) with labels ``y`` (any JSON-storable kind).

        ``keys`` name the rows (e.g. user ids; several rows may share a key) for ``forget(keys=...)``;
        by default a row's key is its row number.
        """
        options = self._options()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, but the data "
                             f"contain only one class: {classes[0]!r}")
        names = getattr(self, "feature_names_in_", None)
        dataset = Dataset.from_arrays(X, y, ids=keys, standardize=bool(options["standardize"]),
                                      feature_names=None if names is None else list(names), name="estimator")
        workdir = tempfile.TemporaryDirectory(prefix="miniunlearn-estimator-")
        with progress_disabled():
            run = train(dataset, options["alpha"], Path(workdir.name) / "run", max_iter=options["max_iter"],
                        penalize_intercept=bool(options["penalize_intercept"]))
        self._workdir = workdir  # removed with the estimator (or when save() moves the run elsewhere)
        self.run_dir_ = Path(run.path)
        atomic_write_json(self.run_dir_ / ESTIMATOR_JSON, {"format": ESTIMATOR_FORMAT, "params": self.get_params()})
        self.classes_ = classes
        self.n_iter_ = np.asarray([int(run.meta["training"].get("iterations", 0))])
        self._use_model(self.run_dir_)
        return self

    def _use_model(self, model_dir: Path) -> None:
        """Make the model in ``model_dir`` the estimator's (coef_, intercept_ on raw features)."""
        predictor = Predictor.load(model_dir)
        linear = predictor.model.to_linear(predictor.theta)
        weight, bias = predictor.preprocessing.raw_linear(linear["weight"].numpy(), linear["bias"].numpy())
        if predictor.model.n_classes == 2:  # scikit-learn's binary convention: one row, class 1 against class 0
            weight, bias = (weight[1] - weight[0])[None, :], np.asarray([bias[1] - bias[0]])
        self.coef_, self.intercept_ = weight, bias
        self._predictor = predictor

    # ---------------------------------------------------------------------------------------- predict
    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._predictor.logits(X)

    def decision_function(self, X):
        """Class scores: ``W x + b`` per class, or for two classes the score of class 1 over class 0."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        return Predictor.softmax(self._logits(X))

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        codes = self._logits(X).argmax(axis=1)  # (first: it checks that the estimator is fitted)
        return self.classes_[codes]

    # ---------------------------------------------------------------------------------------- forget
    def forget(self, rows=None, keys=None, tol=None, compact=None):
        """Forget training rows -- by row number (``rows``) or by key (``keys``) -- in place; returns self.

        A deletion request on the estimator's run: recorded in its ledger and cumulative (rows
        forgotten before stay forgotten). Computed by Mini-Unlearning from the run's history; the
        statistics (time, certificate bound on the distance to retraining, rows) are in
        ``forget_stats_``. ``tol`` defaults to the estimator's ``tol``, ``compact`` (the policy) to
        the estimator's ``compact``: when it compacts, the model is the exact optimum on the kept rows
        and row numbers start again at 0 over them (keys do not change).
        """
        check_is_fitted(self)
        tolerance = self.tol if tol is None else tol
        validate_params(type(self).__name__, {"tol": PARAMETERS["tol"]}, {"tol": tolerance})
        run = self._run()
        out = self.run_dir_ / UNLEARNED_DIR / f"{len(_done_requests(run)) + 1:04d}"
        with progress_disabled():
            result = forget(run, rows, method="mini", out=out, keys=keys, tol=tolerance,
                            compact=self._options()["compact"] if compact is None else compact)
        self.forget_stats_ = {**result.stats, "tol": tolerance}
        self._use_model(out)
        return self

    def compact_run(self):
        """Compact the estimator's run now (:func:`miniunlearn.service.compact.compact`): solve the
        objective on the kept rows exactly from the current model, rebuild the history there, and
        remove every file that depended on forgotten rows; returns self (``compact_stats_``).
        Row numbers then count the kept rows only; keys do not change."""
        from miniunlearn.service.compact import compact as compact_fn

        check_is_fitted(self)
        run = self._run()
        with progress_disabled():
            self.compact_stats_ = compact_fn(run)
        self._use_model(run.path)
        return self

    def _run(self) -> Run:
        run_dir = getattr(self, "run_dir_", None)
        if run_dir is None or not Path(run_dir).is_dir():
            raise RunError("this estimator's run directory is gone (a copy made by pickling or deepcopy does not "
                           "keep the temporary one); save() the estimator to a directory to forget from copies")
        return Run(run_dir)

    # ---------------------------------------------------------------------------------------- files
    def save(self, path, overwrite: bool = False):
        """Write the run directory (model, history, ledger, unlearned models) to ``path``; returns self.

        The estimator then works in ``path`` (later ``forget`` requests are recorded there). The
        copy is assembled beside ``path`` and renamed into place, so ``path`` is never half-written.
        """
        check_is_fitted(self)
        source, target = self._run().path.resolve(), Path(path).resolve()
        if target == source:
            return self
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise InputError(f"{target} exists and is not empty; choose another directory or pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(source, staging / "run", ignore=shutil.ignore_patterns(LOCK_FILE, "*.tmp"))
            if target.exists():
                shutil.rmtree(target)
            (staging / "run").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.run_dir_ = target
        self._workdir = None
        return self

    @classmethod
    def load(cls, path) -> "UnlearningLogisticRegression":
        """An estimator for the run directory ``path`` -- saved by :meth:`save` or trained by ``miniunlearn train``.

        Its model is the run's latest one: the newest completed request that forgot every row
        forgotten so far (the original model when none was).
        """
        run = Run(path)
        params = {"alpha": run.l2}
        if (run.path / ESTIMATOR_JSON).is_file():
            params.update(read_json(run.path / ESTIMATOR_JSON, ESTIMATOR_JSON).get("params", {}))
        estimator = cls(**{k: v for k, v in params.items() if k in PARAMETERS})
        estimator._options()
        estimator.run_dir_ = Path(path).resolve()
        estimator._workdir = None
        preprocessing = run.preprocessing
        estimator.classes_ = preprocessing.labels_array()
        estimator.n_features_in_ = run.model.n_features
        estimator.n_iter_ = np.asarray([int(run.meta.get("training", {}).get("iterations", 0))])
        if preprocessing.feature_names is not None:
            estimator.feature_names_in_ = np.asarray(preprocessing.feature_names, dtype=object)
        estimator._use_model(_latest_model_dir(run))
        return estimator

    def __getstate__(self):
        state = dict(super().__getstate__())  # (object.__getstate__ returns the live __dict__)
        # A temporary run directory belongs to this object: a copy (pickle, deepcopy) predicts, but
        # forgets only once it is saved -- two estimators must not share one temporary run.
        if state.pop("_workdir", None) is not None:
            state["run_dir_"] = None
        return state


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
