"""What a new forget request does, decided from the completed requests alone (a pure function).

* **New deletion** -- rows none of which are forgotten yet: the model is computed with the
  cumulative set (every row forgotten so far plus the new ones).
* **Identical repeat** -- the same rows, method and options as a completed request whose model is
  intact: that model is served again. When every identical request's model is missing or
  altered, the request is a **recomputation** of the latest one.
* **Alternative** -- the same rows as a completed request (or exactly every row forgotten so far)
  with another method or options: computed with that request's cumulative set; it forgets nothing new.
* **Refused** -- any other request naming a row already forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from miniunlearn.core.errors import InputError
from miniunlearn.service.ledger.codec import ids_sha256
from miniunlearn.service.ledger.records import FORGETTING_KINDS, REQUESTED_BY, Request


@dataclass
class Plan:
    """What a new request will do, decided under the ledger lock by :func:`plan_request`."""

    kind: str                       # one of records.KINDS
    ids: np.ndarray                 # the request's own rows (sorted)
    cumulative: np.ndarray          # every row the resulting model has forgotten
    forgotten_before: int           # size of the forgotten set before this request
    refers_to: Request | None = None
    note: str | None = None         # why a recomputation happens
    same_request_dirs: list[str] = field(default_factory=list)  # output dirs of identical earlier requests
    requested_by: str = "rows"      # the request named rows or keys

    def is_same_request_dir(self, out) -> bool:
        """True when ``out`` holds (or held) this very request's result, so refreshing it is safe."""
        return any(Path(out).resolve() == Path(d).resolve() for d in self.same_request_dirs)


def forgotten_ids_from(done: list[Request]) -> np.ndarray:
    """The union of the rows of the completed deletions in ``done`` (sorted)."""
    parts = [r.ids() for r in done if r.kind in FORGETTING_KINDS]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def plan_request(done: list[Request], ids: np.ndarray, method: str, options_json: str, *, run_path, n_train: int,
                 requested_by: str = "rows",
                 model_problem: Callable[[Request], str | None] = Request.model_problem) -> Plan:
    """Decide what a request for ``ids`` with ``method``/options does, given the completed requests ``done``.

    ``done``: the completed requests computed from the run's current base, in id order.
    ``model_problem`` says what is wrong with a request's recorded model (None when intact); it is
    asked only for identical requests, most preferred first, until one is intact.
    ``run_path`` and ``n_train`` only word the refusal. Raises :class:`InputError` when the request
    names rows already forgotten and is neither an identical repeat nor an alternative computation.
    """
    if requested_by not in REQUESTED_BY:
        raise ValueError(f"requested_by must be one of {REQUESTED_BY}")
    plan = _plan(done, np.asarray(ids, dtype=np.int64), method, options_json, run_path, n_train, model_problem)
    plan.requested_by = requested_by
    return plan


def _plan(done, ids, method, options_json, run_path, n_train, model_problem) -> Plan:
    digest = ids_sha256(ids)
    forgotten = forgotten_ids_from(done)
    same_rows = [r for r in done if r.ids_sha256 == digest and r.n_ids == len(ids)]
    identical = [r for r in same_rows if r.method == method and r.options_json == options_json]
    dirs = [str(r.out_path) for r in identical if r.out_dir]
    # serve from the request that computed the model if its file is intact, else from a verified copy
    by_preference = sorted(identical, key=lambda r: (r.kind == "repeat", -r.id))
    for candidate in by_preference:
        if model_problem(candidate) is None:
            return Plan("repeat", ids, candidate.cumulative_ids(), len(forgotten), candidate, same_request_dirs=dirs)
    if identical:
        latest = identical[-1]
        return Plan("recompute", ids, latest.cumulative_ids(), len(forgotten), latest,
                    note=f"{model_problem(latest)}; recomputed from the run's base", same_request_dirs=dirs)
    if same_rows:
        return Plan("alternative", ids, same_rows[-1].cumulative_ids(), len(forgotten), same_rows[-1])
    if forgotten.size and np.array_equal(ids, forgotten):
        latest = [r for r in done if r.kind in FORGETTING_KINDS][-1]
        return Plan("alternative", ids, forgotten, len(forgotten), latest)
    again = np.intersect1d(ids, forgotten, assume_unique=True)
    if again.size:
        raise InputError(_already_forgotten_message(ids, again, done, forgotten, run_path, n_train))
    return Plan("deletion", ids, np.union1d(forgotten, ids), len(forgotten))


def _already_forgotten_message(ids, again, done, forgotten, run_path, n_train) -> str:
    by = [r for r in done if r.kind in FORGETTING_KINDS and np.intersect1d(r.ids(), again).size]
    names = ", ".join(f"#{r.id} ({r.method}, {r.requested_at[:19]})" for r in by[:3])
    more = f" and {len(by) - 3} more" if len(by) > 3 else ""
    return (f"forget request: {again.size} of its {ids.size} rows were already forgotten, e.g. row {int(again[0])}, "
            f"by request {names}{more}. A row is forgotten once; to repeat a request give exactly its rows, "
            f"method and options; to forget further rows leave out those already forgotten "
            f"({forgotten.size} of {n_train} rows are; `miniunlearn ledger {run_path}` lists them)")
