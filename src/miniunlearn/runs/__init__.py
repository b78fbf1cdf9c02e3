"""Run directories: what training writes (model, history, run.json) and every later command reads."""

from miniunlearn.runs.run import (
                                  DELTAGRAD_FILE,
                                  HISTORY_FILE,
                                  MODEL_FILE,
                                  RESULT_JSON,
                                  RUN_JSON,
                                  Run,
                                  load_model,
                                  open_run,
                                  save_model,
)
from miniunlearn.runs.train import train

__all__ = ["DELTAGRAD_FILE", "HISTORY_FILE", "MODEL_FILE", "RESULT_JSON", "RUN_JSON", "Run", "load_model",
           "open_run", "save_model", "train"]
