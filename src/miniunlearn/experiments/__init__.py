"""Experiments that train and unlearn many models: the benchmark and its report, the evaluate and
audit commands' orchestration, and U-LiRA's shadow models. Everything measured here is computed by
:mod:`miniunlearn.evaluation`."""
