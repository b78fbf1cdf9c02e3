"""Every name of a file or folder in a run directory, in one place.

    RUN/
      run.json               config, data fingerprint, timings, metrics (written last: marks the run
                             complete); its "base" entry names the current base
      model.safetensors      parameters and preprocessing (miniunlearn.runs.model_file)
      history.safetensors    Mini-Unlearning's minimal history (converged runs)
      deltagrad.safetensors  DeltaGrad's per-iteration history (when asked for)
      keys.npy               the training rows' keys (miniunlearn.runs.stored)
      data/<sha256>.npy      the rows of runs trained on data in memory (miniunlearn.runs.stored)
      bases/<g>/             a base made by compaction g (miniunlearn.runs.bases): base.json, the
                             files above, dropped-keys.npy; built as bases/.<g>.building-<pid>
      ledger.sqlite          the deletion ledger (miniunlearn.service.ledger)
      ledger.lock            the lock that serialises requests on the run

    OUT/ (an unlearned model)
      result.json            what the request did (written last: marks the directory complete)
      model.safetensors      the unlearned parameters with the run's preprocessing
"""

from __future__ import annotations

from pathlib import Path

RUN_JSON = "run.json"
MODEL_FILE = "model.safetensors"
HISTORY_FILE = "history.safetensors"
DELTAGRAD_FILE = "deltagrad.safetensors"
KEYS_FILE = "keys.npy"
DATA_DIR = "data"
RESULT_JSON = "result.json"  # marks a complete unlearned-model directory (see miniunlearn.service)

BASES_DIR = "bases"
BASE_JSON = "base.json"
DROPPED_KEYS_FILE = "dropped-keys.npy"
BUILDING = ".building"  # suffix of a base folder under construction

LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = "ledger.lock"


def base_relative_dir(generation: int) -> str:
    """The folder of base ``generation``, relative to the run directory (as run.json records it)."""
    return f"{BASES_DIR}/{int(generation)}"


def base_dir(run_dir: str | Path, generation: int) -> Path:
    """The folder of base ``generation`` of the run in ``run_dir``."""
    return Path(run_dir) / BASES_DIR / str(int(generation))


def generation_zero_files() -> list[str]:
    """Names, relative to the run directory, of generation 0's files (model, histories, keys, stored data)."""
    return [MODEL_FILE, HISTORY_FILE, DELTAGRAD_FILE, KEYS_FILE, DATA_DIR]
