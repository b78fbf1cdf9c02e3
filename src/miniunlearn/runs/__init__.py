"""Run directories: what training writes (model, history, run.json) and every later command reads.

``layout`` names every file of a run; ``meta`` checks and updates run.json; ``model_file`` reads and
writes model files; ``outputs`` decides when a directory may take new results; ``bases`` holds the
generations compaction writes; ``stored`` the keys and rows a run keeps; ``run`` the :class:`Run`;
``train`` writes a run; ``predict`` applies a model to raw rows.
"""

from miniunlearn.runs.layout import (
    BASE_JSON,
    BASES_DIR,
    DELTAGRAD_FILE,
    DROPPED_KEYS_FILE,
    HISTORY_FILE,
    KEYS_FILE,
    LEDGER_FILE,
    LOCK_FILE,
    MODEL_FILE,
    RESULT_JSON,
    RUN_JSON,
)
from miniunlearn.runs.meta import RUN_FORMAT, check_run_meta, read_run_meta, update_run_meta
from miniunlearn.runs.model_file import load_model, load_preprocessing, model_dir, save_model
from miniunlearn.runs.outputs import check_output_dir, prepare_output_dir
from miniunlearn.runs.run import Run, open_run
from miniunlearn.runs.train import train

__all__ = ["BASE_JSON", "BASES_DIR", "DELTAGRAD_FILE", "DROPPED_KEYS_FILE", "HISTORY_FILE", "KEYS_FILE", "LEDGER_FILE", "LOCK_FILE",
           "MODEL_FILE", "RESULT_JSON", "RUN_FORMAT", "RUN_JSON", "Run", "check_output_dir", "check_run_meta",
           "load_model", "load_preprocessing", "model_dir", "open_run", "prepare_output_dir", "read_run_meta",
           "save_model", "train", "update_run_meta"]
