"""Bases: the model, history and rows every deletion request of a run computes from.

Generation 0 is what ``train`` wrote into the run directory. A compaction
(:func:`miniunlearn.service.compact`) solves F_R exactly on the rows kept so far and makes that
optimum generation g+1, a folder built completely under a temporary name and renamed into place:

    RUN/bases/<g>/
      base.json            the base record, written last: generation, rows (count, fingerprint,
                           keys), preprocessing, its files with their SHA-256, how it was solved
      model.safetensors    the optimum on the base's rows, with the base's preprocessing
      history.safetensors  Mini-Unlearning's history at that optimum
      keys.npy             every base row's key (miniunlearn.data.keys)
      dropped-keys.npy     every key whose rows compactions have left out so far
      data/<sha256>.npy    the base's rows, for runs trained on data in memory (miniunlearn.runs.stored)

``run.json``'s ``"base"`` entry (generation, folder, SHA-256 of ``base.json``) names the current
base, and rewriting ``run.json`` atomically is the switch: a run always has exactly one current
base, the old one or the new one. A run without the entry is at generation 0. Everything else --
generation 0's files once a later base is current, other ``bases/`` folders, half-built folders --
is garbage that the next compaction or request removes (:func:`stale_paths`).

Row numbers are those of the current base (0..n_base-1); keys never change. A base's rows are
found in the run's data source by key (:func:`select_base_rows`): rows whose keys a compaction
dropped are left out while the source still holds them, so the user may delete them from their
files at any time after the compaction -- but not before.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from miniunlearn.core.errors import DataError, RunError
from miniunlearn.core.storage import (
    atomic_write_json,
    file_sha256,
    read_json,
    remove_tree_durably,
    rename_durably,
)
from miniunlearn.runs.layout import (
    BASE_JSON,
    BASES_DIR,
    BUILDING,
    RUN_JSON,
    base_dir,
    base_relative_dir,
    generation_zero_files,
)

BASE_FORMAT = "miniunlearn-base/1"


class MissingRowsError(DataError):
    """The run's data source lacks rows of the current base (e.g. rows deleted before a compaction)."""

    def __init__(self, message: str, missing: int, source_file: str | None):
        super().__init__(message)
        self.missing = int(missing)
        self.source_file = source_file


@dataclass(frozen=True)
class Base:
    """One generation of a run's base: where its files are and its record (``base.json``).

    For generation 0 the record is assembled from ``run.json`` (the files are the run's own).
    """

    generation: int
    dir: Path
    record: dict

    @property
    def data(self) -> dict:
        return self.record["dataset"]

    @property
    def n_train(self) -> int:
        return int(self.data["n_train"])

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def keys_record(self) -> dict | None:
        return self.data.get("keys")

    @property
    def dropped_keys_record(self) -> dict | None:
        return self.data.get("dropped_keys")

    @property
    def stored(self) -> dict | None:
        return self.data.get("stored")

    @property
    def mini_history_record(self) -> dict | None:
        return (self.record.get("history") or {}).get("mini")


def read_base(run_dir: Path, meta: dict) -> Base:
    """The current base of the run whose ``run.json`` is ``meta`` (checked against its record's SHA-256)."""
    run_dir = Path(run_dir)
    pointer = meta.get("base")
    if pointer is None:
        return Base(0, run_dir, {"generation": 0, "dataset": meta["dataset"], "history": meta.get("history") or {}})
    where = run_dir / RUN_JSON
    if (not isinstance(pointer, dict) or not isinstance(pointer.get("generation"), int)
            or pointer["generation"] < 1 or pointer.get("dir") != base_relative_dir(pointer["generation"])
            or not isinstance(pointer.get("sha256"), str)):
        raise RunError(f"{where} is corrupted: its base entry {pointer!r} is not a generation, folder and SHA-256")
    generation = pointer["generation"]
    folder = run_dir / pointer["dir"]
    record_path = folder / BASE_JSON
    if not record_path.is_file():
        raise RunError(f"run {run_dir} is at base {generation}, but its record {record_path} is missing; restore "
                       "the run directory from a backup")
    digest = file_sha256(record_path)
    if digest != pointer["sha256"]:
        raise RunError(f"the base record {record_path} was changed or damaged (SHA-256 {digest[:16]}... != "
                       f"{pointer['sha256'][:16]}... in {RUN_JSON})")
    record = read_json(record_path, BASE_JSON)
    check_base_record(record, generation, record_path)
    return Base(generation, folder, record)


def check_base_record(record, generation: int, where: Path) -> None:
    """Refuse a base record without the fields a run reads."""
    if not isinstance(record, dict) or record.get("format") != BASE_FORMAT:
        raise RunError(f"{where} is not a miniunlearn base record")
    if record.get("generation") != generation:
        raise RunError(f"{where} records generation {record.get('generation')!r}, not {generation}")
    data = record.get("dataset")
    if not isinstance(data, dict) or not {"n_train", "fingerprint", "keys"} <= set(data):
        raise RunError(f"{where} is corrupted: its dataset section lacks n_train, fingerprint or keys")
    if not isinstance(data["n_train"], int) or data["n_train"] < 1 or not isinstance(data["fingerprint"], str):
        raise RunError(f"{where} is corrupted: impossible row count or fingerprint")


def base_pointer(generation: int, record_sha256: str) -> dict:
    """run.json's ``"base"`` entry naming generation ``generation`` as current."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {"generation": int(generation), "dir": base_relative_dir(generation), "sha256": record_sha256, "since": now}


def write_base_folder(run_dir: Path, generation: int, write_files: Callable[[Path], dict]) -> tuple[Path, str]:
    """Build ``RUN/bases/<generation>/`` under a temporary name and rename it into place.

    ``write_files(folder)`` writes the base's files (each atomically) and returns its record,
    which is written last as ``base.json``. Returns the folder and the record's SHA-256. The
    folder is not yet the run's base: switching is the caller's (rewriting run.json).
    """
    final = base_dir(run_dir, generation)
    if final.exists():
        raise RunError(f"{final} exists already; an earlier compaction's leftovers must be removed first")
    building = final.with_name(f".{generation}{BUILDING}-{os.getpid()}")
    remove_tree_durably(building)
    building.mkdir(parents=True)
    try:
        record = write_files(building)
        atomic_write_json(building / BASE_JSON, record)
        rename_durably(building, final)
    except BaseException:
        remove_tree_durably(building)
        raise
    return final, file_sha256(final / BASE_JSON)


def stale_paths(run_dir: Path, meta: dict) -> list[Path]:
    """Every file or folder of a base that is not the current one (absent ones left out).

    Call only while holding the run's request lock (no compaction is then under way): any other
    ``bases/`` entry is a former base, or one a killed compaction left behind.
    """
    run_dir = Path(run_dir)
    current = read_base(run_dir, meta).generation
    paths = [run_dir / name for name in generation_zero_files()] if current > 0 else []
    folder = run_dir / BASES_DIR
    if folder.is_dir():
        paths += sorted(entry for entry in folder.iterdir() if entry.name != str(current))
    return [p for p in paths if p.exists()]


def remove_paths(paths: list[Path]) -> None:
    for path in paths:
        remove_tree_durably(path)


# ---------------------------------------------------------------------------------------------- rows
def select_base_rows(source, keys: np.ndarray, dropped: np.ndarray | None, where: str):
    """The base's rows out of ``source`` (the run's data as loaded), in the base's order.

    ``keys`` are the base rows' keys, ``dropped`` every key whose rows compactions left out.
    A source row is kept when it is the next base row, and left out when its key was dropped (the
    user has not deleted it from the data yet); any other row, or a base row the source lacks, is
    an error. Data without an id column (keys are row numbers) that holds exactly as many rows as
    the base is taken row for row: a file from which the dropped rows were deleted. The caller
    checks the fingerprint of the result, so a wrong match is refused, never used.
    """
    loaded = np.arange(source.n_train, dtype=np.int64) if source.keys is None else np.asarray(source.keys)
    keys = np.asarray(keys)
    if len(loaded) == len(keys) and (np.array_equal(loaded, keys)
                                     or np.array_equal(loaded, np.arange(len(loaded)))):
        return dataclasses.replace(source, keys=keys)
    if loaded.dtype.kind != keys.dtype.kind and not (loaded.dtype.kind in "iu" and keys.dtype.kind in "iu"):
        raise DataError(f"{where}: its keys are {_kind(loaded)}, the run's are {_kind(keys)}; refusing to unlearn "
                        "against other data")
    dropped = np.zeros(0, dtype=keys.dtype) if dropped is None else np.asarray(dropped)
    keep = _rows_to_keep(loaded, keys, dropped, where)
    if int(keep.sum()) == len(keys) and keep.all():
        return dataclasses.replace(source, keys=keys)
    return dataclasses.replace(source, X_train=np.ascontiguousarray(source.X_train[keep]),
                               y_train=np.asarray(source.y_train)[keep], keys=keys, _fingerprint=[])


def _kind(keys: np.ndarray) -> str:
    return "integers" if keys.dtype.kind in "iu" else "text"


def _rows_to_keep(loaded: np.ndarray, keys: np.ndarray, dropped: np.ndarray, where: str) -> np.ndarray:
    """Which source rows are the base's (see :func:`select_base_rows`)."""
    in_base = np.isin(loaded, keys)
    was_dropped = np.isin(loaded, dropped) if dropped.size else np.zeros(len(loaded), dtype=bool)
    foreign = ~in_base & ~was_dropped
    if foreign.any():
        example = loaded[np.flatnonzero(foreign)[0]]
        raise DataError(f"{where}: {int(foreign.sum())} row(s) have keys the run never had or kept (e.g. "
                        f"{_text(example)!r}); refusing to unlearn against other data")
    if (in_base & was_dropped).any():  # keys with both dropped and kept rows: match in order
        keep = _match_in_order(loaded, keys, was_dropped, where)
    else:
        keep = in_base
    kept = loaded[keep]
    if len(kept) < len(keys):
        raise MissingRowsError(f"{where}: it lacks {len(keys) - len(kept)} of the base's {len(keys)} rows",
                               len(keys) - len(kept), None)
    if not np.array_equal(kept, keys):
        raise DataError(f"{where}: its rows are not the run's base rows in their order (keys differ); refusing to "
                        "unlearn against other data")
    return keep


def _match_in_order(loaded: np.ndarray, keys: np.ndarray, was_dropped: np.ndarray, where: str) -> np.ndarray:
    """Keep each source row that is the next base row; the others must have dropped keys."""
    keep = np.zeros(len(loaded), dtype=bool)
    j = 0
    for i, key in enumerate(loaded.tolist()):
        if j < len(keys) and key == keys[j]:
            keep[i] = True
            j += 1
        elif not was_dropped[i]:
            raise DataError(f"{where}: its row {i} (key {_text(key)!r}) is not the base's next row, and no "
                            "compaction dropped its key; refusing to unlearn against other data")
    return keep


def _text(key) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
