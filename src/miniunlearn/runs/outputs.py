"""Output directories: when a path may take new results (a run or an unlearned model), and
preparing it so that a crash never leaves an old completion marker vouching for new files."""

from __future__ import annotations

from pathlib import Path

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import remove_durably
from miniunlearn.runs.layout import RESULT_JSON, RUN_JSON


def check_output_dir(path: str | Path, marker: str, overwrite: bool) -> Path:
    """Refuse an output path that cannot take new results (checked before any work; changes nothing).

    ``marker`` is the file that marks the directory complete: ``run.json`` for a run,
    ``result.json`` for an unlearned model.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"output path {path} exists and is not a directory")
    # a run and an unlearned model share file names (model.safetensors): one never overwrites the other
    for other in {RUN_JSON: (RESULT_JSON,), RESULT_JSON: (RUN_JSON,)}.get(marker, ()):
        if (path / other).exists():
            kind = "a training run" if other == RUN_JSON else "an unlearned model"
            raise RunError(f"{path} holds {kind} ({other}); writing here would replace its files. "
                           "Choose another --out")
    if (path / marker).exists() and not overwrite:
        raise RunError(f"{path} already holds results ({marker}); choose another --out or pass --overwrite")
    return path


def prepare_output_dir(path: str | Path, marker: str, overwrite: bool) -> Path:
    """Create ``path`` for new results, refusing to replace existing results unless ``overwrite``."""
    path = check_output_dir(path, marker, overwrite)
    if (path / marker).exists():
        # Retire the completion marker first: a crash while the new files are written must not
        # leave the old marker vouching for a mix of old and new files.
        remove_durably(path / marker)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create output directory {path}: {exc.strerror or exc}") from exc
    return path
