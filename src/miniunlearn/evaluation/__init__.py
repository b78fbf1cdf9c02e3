"""Pure measurements of models: fidelity to the retrained model, membership-inference attacks and
LiRA statistics (docs/evaluation.md). Nothing here trains or unlearns a model.

* :mod:`~miniunlearn.evaluation.metrics` -- accuracy gaps, ||w - w_R||, relative residual, KL and
  agreement with the retrained model, in bounded-memory chunks;
* :mod:`~miniunlearn.evaluation.mia` -- population attacks: the cross-validated loss attack and
  SalUn's confidence-SVC MIA-efficacy, with DeLong / binomial confidence intervals;
* :mod:`~miniunlearn.evaluation.lira` -- per-example Gaussians and likelihood-ratio scores of LiRA,
  leave-one-out scores over shadow models and bootstrap intervals of their pooled ROC.
"""
