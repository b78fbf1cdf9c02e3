"""Unlearning methods behind one interface and a registry (see :mod:`miniunlearn.methods.interface`).

Every module of this package is imported here, so a method registers itself by existing:
adding a method is adding one file. The forget *service* (validation, ledger, files) is
:mod:`miniunlearn.service`.
"""

import importlib
import pkgutil

from miniunlearn.methods.interface import (
    UnlearnContext,
    UnlearningMethod,
    UnlearnResult,
    get_method,
    make_method,
    method_names,
    register,
    unregister,
)

__all__ = ["UnlearnContext", "UnlearningMethod", "UnlearnResult", "get_method", "make_method", "method_names",
           "register", "unregister"]

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
