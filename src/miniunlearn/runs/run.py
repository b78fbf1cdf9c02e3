"""The :class:`Run`: a trained run directory, served from its current base.

The files of a run are listed in :mod:`miniunlearn.runs.layout`; ``run.json`` is checked by
:mod:`miniunlearn.runs.meta`, model files are read and written by :mod:`miniunlearn.runs.model_file`,
the base (generation 0, or the latest compaction's) by :mod:`miniunlearn.runs.bases`, and the keys
and stored rows by :mod:`miniunlearn.runs.stored`. Every file is written atomically; nothing is pickled.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from miniunlearn.core.errors import DataError, InputError, RunError
from miniunlearn.core.storage import read_json
from miniunlearn.data import Preprocessing, load_dataset
from miniunlearn.data import keys as keys_module
from miniunlearn.data.dataset import is_file_format, parse_dataset_spec, recorded_spec, restandardized
from miniunlearn.history import DeltaGradHistory, MiniHistory
from miniunlearn.models.logistic import LogisticRegression
from miniunlearn.runs.bases import MissingRowsError, read_base, select_base_rows
from miniunlearn.runs.layout import DELTAGRAD_FILE, HISTORY_FILE, MODEL_FILE, RESULT_JSON, RUN_JSON
from miniunlearn.runs.meta import read_run_meta
from miniunlearn.runs.model_file import load_model, load_preprocessing
from miniunlearn.runs.stored import load_keys, load_stored
from miniunlearn.training.trajectory import SGDSchedule


class Run:
    """A trained run directory (see the module docstring), served from its current base.

    Everything a deletion computes from -- parameters, history, rows and their keys, row count,
    fingerprint, preprocessing -- is the current base's (:mod:`miniunlearn.runs.bases`); ``meta``
    (run.json) keeps the configuration and the facts of the original training.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"run directory not found: {self.path}")
        if not (self.path / RUN_JSON).exists() and (self.path / RESULT_JSON).exists():
            raise RunError(f"{self.path} holds an unlearned model ({RESULT_JSON}), not a training run; to forget "
                           f"more rows, run forget on the original run{_original_run(self.path)}: its deletion "
                           "ledger remembers what was already forgotten and every method computes from the "
                           "run's base")
        self.meta = read_run_meta(self.path)
        self.base = read_base(self.path, self.meta)
        self.given_data = None  # data in memory standing in for the recorded spec (use_dataset)

    def refresh(self) -> bool:
        """Re-read run.json; when another base became current (a compaction, maybe by another
        process), forget everything read from the old one. Returns whether the base changed."""
        meta = read_run_meta(self.path)
        base = read_base(self.path, meta)
        self.meta = meta
        changed = (base.generation, base.fingerprint) != (self.base.generation, self.base.fingerprint)
        if changed:
            self.base = base
            for name in ("dataset", "preprocessing", "_keys"):
                self.__dict__.pop(name, None)
        return changed

    # -- configuration ---------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def l2(self) -> float:
        return float(self.config["l2"])

    @property
    def mode(self) -> str:
        return self.config["mode"]

    @property
    def penalize_intercept(self) -> bool:
        return bool(self.config.get("penalize_intercept", True))

    @property
    def spec(self) -> str:
        """The dataset spec that reloads the run's data, held-out draw included (:func:`~miniunlearn.data.dataset.recorded_spec`)."""
        return recorded_spec(self.meta["dataset"])

    @property
    def generation(self) -> int:
        """The current base's generation: 0 until the first compaction."""
        return self.base.generation

    @property
    def fingerprint(self) -> str:
        return self.base.fingerprint

    @property
    def n_train(self) -> int:
        return self.base.n_train

    @cached_property
    def model(self) -> LogisticRegression:
        m = self.meta["model"]
        return LogisticRegression(int(m["n_features"]), int(m["n_classes"]))

    # -- files -----------------------------------------------------------------------------
    def theta(self) -> torch.Tensor:
        model, theta, _ = load_model(self.base.dir)
        if (model.n_features, model.n_classes) != (self.model.n_features, self.model.n_classes):
            raise RunError(f"{self.base.dir / MODEL_FILE} does not match {RUN_JSON}'s model shape")
        return theta

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """Raw features -> the model's features, class numbers -> the user's labels (saved with the model)."""
        return load_preprocessing(self.base.dir)

    @cached_property
    def dataset(self):
        """The base's training rows -- stored in the run, or reloaded from the recorded spec --
        checked against the base's fingerprint."""
        if self.base.stored is not None:
            keys = None if self.base.keys_record is None else self.keys()
            dataset = load_stored(self.base.dir, self.base.data, self.model.n_classes, self.preprocessing, keys)
        elif self.base.generation == 0:
            dataset = self.given_data if self.given_data is not None else load_dataset(self.spec)
        else:
            dataset = self.rows_of(self.preprocessing, self.keys(), self.dropped_keys())
        self.check_dataset(dataset)
        return dataset

    def rows_of(self, preprocessing: Preprocessing, keys: np.ndarray, dropped: np.ndarray | None):
        """The rows with ``keys`` (in that order) out of the run's data source, standardised like
        ``preprocessing``; rows whose keys are in ``dropped`` are left out while the source still holds them
        (:func:`miniunlearn.runs.bases.select_base_rows`). Not fingerprint-checked."""
        statistics = preprocessing if preprocessing.scaled else None
        try:
            return select_base_rows(self._source(statistics), keys, dropped, f"the data for {self.spec!r}")
        except MissingRowsError as exc:
            raise self._missing_rows(exc.missing) from None

    def _source(self, statistics: Preprocessing | None):
        """The run's data as the spec loads it (or as given to :meth:`use_dataset`), standardised by ``statistics``."""
        given = self.given_data
        if given is not None and self.base.stored is None:
            if statistics is None or (np.array_equal(given.preprocessing.mean, statistics.mean)
                                      and np.array_equal(given.preprocessing.scale, statistics.scale)):
                return given
            if not is_file_format(self.spec):  # files are re-read: their float32 maps are made from raw values
                return restandardized(given, statistics)
        return load_dataset(self.spec, statistics)

    # -- keys ------------------------------------------------------------------------------
    def keys(self) -> np.ndarray:
        """The base rows' keys (:mod:`miniunlearn.data.keys`): the data's id column, else row numbers
        in the original data."""
        return self._keys

    @cached_property
    def _keys(self) -> np.ndarray:
        return load_keys(self.base.dir, self.base.keys_record, self.n_train)

    def dropped_keys(self) -> np.ndarray | None:
        """Every key whose rows compactions have left out (None before the first compaction)."""
        record = self.base.dropped_keys_record
        return None if record is None else load_keys(self.base.dir, record, None)

    def keys_of(self, rows: np.ndarray) -> list[str]:
        """The canonical text of the keys of training rows ``rows``."""
        return keys_module.canonical(self.keys()[np.asarray(rows, dtype=np.int64)])

    def rows_for_keys(self, requested: list[str], source: str = "forget request") -> np.ndarray:
        """Every training row whose key is requested (an :class:`InputError` names unknown keys)."""
        dropped = self.dropped_keys()
        if dropped is not None:
            gone = set(keys_module.canonical(dropped)) & {str(k) for k in requested}
            if gone:
                gone -= set(keys_module.canonical(self.keys()))  # (a key may keep rows that were not dropped)
            if gone:
                raise InputError(f"{source}: {len(gone)} key(s) were forgotten and compacted away already, e.g. "
                                 f"{sorted(gone)[0]!r}; the run's base has no row of theirs (`miniunlearn ledger "
                                 f"{self.path}` lists every forgotten key)")
        return keys_module.rows_with_keys(self.keys(), requested, self.dataset.test_keys, source)

    def use_dataset(self, dataset) -> None:
        """Unlearn against ``dataset`` (already in memory) instead of reloading the recorded spec:
        the base's rows, or the data as the spec loads it (after a compaction the base's rows are
        then taken out of it by key, and again after every later compaction)."""
        previous, self.given_data = self.given_data, dataset
        try:
            chosen = dataset
            if self.base.generation > 0 and self.base.stored is None and not (
                    dataset.n_train == self.n_train and dataset.fingerprint() == self.fingerprint):
                chosen = self.rows_of(self.preprocessing, self.keys(), self.dropped_keys())
            self.check_dataset(chosen)
        except BaseException:
            self.given_data = previous
            raise
        self.__dict__["dataset"] = chosen  # what the cached property would have computed

    def check_dataset(self, dataset) -> None:
        if dataset.n_train < self.n_train:
            raise self._missing_rows(self.n_train - dataset.n_train)
        if dataset.n_train != self.n_train:
            raise DataError(f"the data for {self.spec!r} has {dataset.n_train} training rows but "
                            f"run {self.path} records {self.n_train}; refusing to unlearn against other data")
        if dataset.fingerprint() != self.fingerprint:
            raise DataError(f"the data for {self.spec!r} no longer matches run {self.path}: "
                            f"fingerprint {dataset.fingerprint()[:23]}... != recorded {self.fingerprint[:23]}...; "
                            "the history was computed on other data, so unlearning against it is refused"
                            + _positional_split_note(self.spec))

    def _missing_rows(self, missing: int):
        """The error for a data source that lacks ``missing`` of the base's rows."""
        file = _data_file(self.spec)
        return MissingRowsError(
            f"the data for {self.spec!r} lacks {missing} of the {self.n_train} training rows of run {self.path}: "
            f"rows forgotten since the last compaction are still needed in the data; run `miniunlearn compact "
            f"{self.path}` before removing them from {file or 'the data'}", missing, file)

    def history_path(self) -> Path:
        return self.base.dir / HISTORY_FILE

    def mini_history(self):
        if not self.history_path().is_file():
            raise RunError(f"run {self.path} has no Mini-Unlearning history ({HISTORY_FILE}); "
                           "train it in converged mode to record one")
        history = MiniHistory.load(self.history_path())
        if history.fingerprint != self.fingerprint:
            raise RunError(f"history {self.history_path()} belongs to other data (fingerprint mismatch)")
        if history.theta.numel() != self.model.n_params:
            raise RunError(f"history {self.history_path()} does not match the model's {self.model.n_params} parameters")
        if history.n != self.n_train or history.l2 != self.l2 or history.penalize_intercept != self.penalize_intercept:
            raise RunError(f"history {self.history_path()} was recorded for n={history.n}, l2={history.l2:g} but "
                           f"{RUN_JSON} says n={self.n_train}, l2={self.l2:g}; the run directory is inconsistent")
        return history

    def deltagrad_history(self):
        path = self.base.dir / DELTAGRAD_FILE
        if not path.is_file():
            raise RunError(f"run {self.path} has no DeltaGrad history ({DELTAGRAD_FILE}); train with "
                           "`--mode trajectory --deltagrad-history` to record one")
        history = DeltaGradHistory.load(path)
        if history.fingerprint != self.fingerprint:
            raise RunError(f"DeltaGrad history {path} belongs to other data (fingerprint mismatch)")
        return history

    def schedule(self):
        if self.mode != "trajectory":
            raise RunError(f"run {self.path} was trained in {self.mode} mode, not trajectory mode")
        return SGDSchedule.from_dict(self.config["sgd"])


def _data_file(spec: str) -> str | None:
    """The data file a spec names (None for built-in datasets)."""
    try:
        info, values = parse_dataset_spec(spec)
    except DataError:
        return None
    return str(values["path"]) if info.suffixes and values.get("path") is not None else None


def _positional_split_note(spec: str) -> str:
    """For a file whose held-out rows are drawn by position: why deleting rows from it changes the training rows."""
    try:
        info, values = parse_dataset_spec(spec)
    except DataError:
        return ""
    if not info.suffixes or values.get("test") is not None or values.get("test_size") == 0 \
            or values.get("split") == "key":
        return ""
    return (f". If rows were deleted from {values.get('path')}: its held-out test rows are drawn by row position "
            "(split=row), so deleting rows moves others between the training and test rows; data whose rows "
            "will be deleted needs keys (id=COLUMN: the held-out rows are then drawn by key), test=FILE or "
            "test_size=0")


def _original_run(result_dir: Path) -> str:
    try:
        origin = read_json(result_dir / RESULT_JSON, RESULT_JSON).get("run")
    except (RunError, AttributeError):
        return ""
    return f" {origin}" if isinstance(origin, str) else ""


def open_run(path: str | Path) -> Run:
    return Run(path)
