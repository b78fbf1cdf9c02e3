"""Metrics, membership-inference attacks and reports for unlearned models (SPEC section 5).

* :mod:`~miniunlearn.evaluation.metrics` -- accuracy gaps, ||w - w_R||, relative residual, KL and
  agreement with the retrained model, in bounded-memory chunks;
* :mod:`~miniunlearn.evaluation.mia` -- population attacks: the cross-validated loss attack and
  SalUn's confidence-SVC MIA-efficacy, with DeLong / binomial confidence intervals;
* :mod:`~miniunlearn.evaluation.ulira` -- per-example U-LiRA with shadow models;
* :mod:`~miniunlearn.evaluation.audit` -- loading a forget request's models; ``evaluate`` and ``audit``.

See docs/evaluation.md for the protocols and how to read the numbers.
"""
