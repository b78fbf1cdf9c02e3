"""What a server keeps open: the run (rows, keys and curvature history loaded once) and the model it serves.

The served model is the ledger's latest: the model of the last completed deletion computed from
the run's current base, or the base's own model when there is none (no request yet, or a
compaction made the optimum on the kept rows the base). :class:`ServedModel` objects are
immutable and replaced by one reference assignment (:meth:`ServerState.swap`), so a prediction
reads either the old model or the new one, never a mixture; the swap happens *before* the
requests it serves are marked done, so once a client reads ``done`` every later prediction uses a
model at least that new.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from miniunlearn.core.storage import file_sha256
from miniunlearn.runs.predict import Predictor
from miniunlearn.runs import MODEL_FILE, Run, model_dir
from miniunlearn.service.ledger import FORGETTING_KINDS, Ledger


class WarmRun(Run):
    """A :class:`Run` that keeps its Mini-Unlearning history in memory between requests.

    ``Run`` reads the history file on every request (a command-line process serves one); a server
    reads it once per base. The history is only read by the methods, never changed, so sharing it
    between requests is safe; a new base (compaction) loads the new one.
    """

    def mini_history(self):
        key = (str(self.history_path()), self.base.generation, self.fingerprint)
        cached = self.__dict__.get("_warm_history")
        if cached is None or cached[0] != key:
            cached = (key, super().mini_history())
            self.__dict__["_warm_history"] = cached
        return cached[1]

    def warm(self) -> dict:
        """Load everything a deletion reads (rows, keys, preprocessing, history); returns the seconds taken."""
        start = time.perf_counter()
        _ = self.dataset, self.preprocessing, self.theta()
        seconds = {"data_s": time.perf_counter() - start}
        if self.history_path().is_file():
            start = time.perf_counter()
            self.mini_history()
            seconds["history_s"] = time.perf_counter() - start
        return seconds


@dataclass(frozen=True)
class ServedModel:
    """One model as served: its predictor, file, hash and the ledger request that made it (None: the base)."""

    predictor: Predictor
    path: Path
    sha256: str
    ledger_request: int | None
    generation: int
    certificate: float | None = None
    certified_relative: float | None = None
    n_forgotten: int = 0
    loaded_at: float = field(default_factory=time.time)

    def metadata(self) -> dict:
        pre = self.predictor.preprocessing
        return {"model_sha256": self.sha256, "ledger_request": self.ledger_request, "base_generation": self.generation,
                "certificate": self.certificate, "certified_relative": self.certified_relative,
                "n_forgotten_since_base": self.n_forgotten, "n_features": self.predictor.model.n_features,
                "classes": [_plain(c) for c in pre.classes],
                "feature_names": None if pre.feature_names is None else [str(n) for n in pre.feature_names]}


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def latest_model(run: Run) -> ServedModel:
    """The model the ledger says is current (see the module docstring)."""
    latest = None
    forgotten = 0
    if Ledger.exists(run):
        with Ledger.open(run) as book:
            done = [r for r in book.current_requests("done") if r.kind in FORGETTING_KINDS]
            forgotten = int(book.forgotten_ids().size)
        latest = done[-1] if done else None
    if latest is not None and latest.model_problem() is None:
        stats = latest.stats
        return ServedModel(Predictor.load(latest.out_path), latest.model_path, latest.model_sha256, latest.id,
                           run.generation, stats.get("certificate"), stats.get("certified_relative"), forgotten)
    if latest is not None:  # the latest request's model was removed (a compaction published the base)
        forgotten = 0
    path = model_dir(run.path) / MODEL_FILE
    return ServedModel(Predictor.load(run.path), path, file_sha256(path), None, run.generation, 0.0, 0.0, forgotten)


class ServerState:
    """The run, the served model and the lock that orders swaps."""

    def __init__(self, run: WarmRun):
        self.run = run
        self._swap_lock = threading.Lock()
        self.model = latest_model(run)

    def swap(self) -> ServedModel:
        """Load the ledger's latest model and make it the served one (one reference assignment)."""
        with self._swap_lock:
            fresh = latest_model(self.run)
            if fresh.sha256 != self.model.sha256 or fresh.ledger_request != self.model.ledger_request:
                self.model = fresh
            return self.model
