"""Which fitted transformers a pipeline may forget through, and how: refitted on the kept rows.

A transformer's fitted state (a scaler's statistics, an encoder's categories, an imputer's fill
values) is a deterministic function of the rows it was fitted on, so fitting a clone on the kept
rows gives exactly the state ``clone(pipe).fit(X_kept, y_kept)`` gives -- categories only
forgotten rows had disappear, with their output columns. That costs one pass over the kept rows
per transformer, as an exact downdate of the statistics would, and needs no code per kind.

Only transformers known to be deterministic and row-wise are accepted (:data:`FORGETTABLE`, and
containers of them: Pipeline, ColumnTransformer, FeatureUnion). Anything else -- a PCA, a model
used as a feature extractor, a third-party transformer -- may depend on forgotten rows in a way
this module cannot vouch for, and is refused by name before anything is changed.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import (
    Binarizer,
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from miniunlearn.core.errors import InputError

# Stateful ones (statistics of the rows: refitted on the kept rows) and stateless ones (Normalizer,
# Binarizer, FunctionTransformer, PolynomialFeatures: their fit records shapes only).
FORGETTABLE = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer, MissingIndicator,
               OneHotEncoder, OrdinalEncoder, Normalizer, Binarizer, FunctionTransformer, PolynomialFeatures)
PASSING = (None, "passthrough", "drop")


def check_forgettable(step, name: str) -> None:
    """Refuse (``ValueError`` naming it) a step whose fitted state a refit on the kept rows cannot be
    trusted to reproduce; containers are checked step by step."""
    if isinstance(step, str) or step is None:
        if step not in PASSING:
            raise InputError(f"pipeline step {name!r}: {step!r} is not a transformer")
        return
    if isinstance(step, Pipeline):
        for inner, sub in step.steps:
            check_forgettable(sub, f"{name}__{inner}")
    elif isinstance(step, ColumnTransformer):
        for inner, sub, _ in step.transformers:
            check_forgettable(sub, f"{name}__{inner}")
        check_forgettable(step.remainder, f"{name}__remainder")
    elif isinstance(step, FeatureUnion):
        for inner, sub in step.transformer_list:
            check_forgettable(sub, f"{name}__{inner}")
    elif type(step) not in FORGETTABLE:
        allowed = ", ".join(sorted(kind.__name__ for kind in FORGETTABLE))
        raise InputError(f"pipeline step {name!r} ({type(step).__name__}) has fitted state that forgetting cannot "
                         f"bring to a refit on the kept rows; forgettable transformers: {allowed}, and "
                         "Pipeline / ColumnTransformer / FeatureUnion of them")


def adopt(target, fitted) -> None:
    """Give ``target`` (the pipeline's own step object) the fitted state of ``fitted``, in place, so
    that references to the step the user holds see the new state."""
    state = vars(target)
    state.clear()
    state.update(vars(fitted))
