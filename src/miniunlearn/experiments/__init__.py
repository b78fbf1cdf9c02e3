"""Experiments that train and unlearn many models: the benchmark and its report, the evaluate and
audit commands' orchestration, and the shadow models of the population U-LiRA (``ulira``, the
privacy figure) and of the exactness test (``exactness``). Everything measured here is computed by
:mod:`miniunlearn.evaluation`."""
