"""``run.json``: the record of a run -- checked on every read, updated atomically."""

from __future__ import annotations

from pathlib import Path

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import atomic_write_json, read_json
from miniunlearn.runs.layout import RUN_JSON

RUN_FORMAT = "miniunlearn-run/1"

_META_FIELDS = {"config": ("l2", "mode"), "dataset": ("spec", "fingerprint", "n_train"),
                "model": ("n_features", "n_classes")}


def read_run_meta(run_dir: str | Path) -> dict:
    """A run's ``run.json``, checked (:func:`check_run_meta`)."""
    target = Path(run_dir) / RUN_JSON
    meta = read_json(target, RUN_JSON)
    check_run_meta(meta, target)
    return meta


def update_run_meta(path: str | Path, **fields) -> dict:
    """Add or replace top-level fields of a run's ``run.json`` (atomically); returns the new record."""
    meta = read_run_meta(path)
    meta.update(fields)
    atomic_write_json(Path(path) / RUN_JSON, meta)
    return meta


def check_run_meta(meta, where: Path) -> None:
    """Refuse a run.json that is not a JSON object with the fields every command reads."""
    if not isinstance(meta, dict):
        raise RunError(f"{where} is corrupted: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{where} is not a miniunlearn run (format {meta.get('format')!r})")
    for section, keys in _META_FIELDS.items():
        block = meta.get(section)
        missing = [k for k in keys if not isinstance(block, dict) or k not in block]
        if missing:
            raise RunError(f"{where} is corrupted: {section} lacks {', '.join(missing)}")
    try:
        numbers = [int(meta["dataset"]["n_train"]), int(meta["model"]["n_features"]), int(meta["model"]["n_classes"]),
                   float(meta["config"]["l2"])]
    except (TypeError, ValueError) as exc:
        raise RunError(f"{where} is corrupted: a size or l2 is not a number ({exc})") from None
    if min(numbers[:3]) < 1 or not numbers[3] > 0:
        raise RunError(f"{where} is corrupted: impossible sizes or l2 ({numbers})")
    if not isinstance(meta["dataset"]["spec"], str) or not isinstance(meta["dataset"]["fingerprint"], str):
        raise RunError(f"{where} is corrupted: dataset spec and fingerprint must be strings")
