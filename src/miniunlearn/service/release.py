"""(epsilon, delta)-certified releases of unlearned and retrained models (docs/evaluation.md).

A release publishes ``w + N(0, sigma^2 I)`` instead of ``w``, with sigma calibrated by
:func:`miniunlearn.privacy.calibrate` on the **sensitivity** Delta: a bound on the distance
between the model and the retrained model it stands in for. For an unlearned model

    Delta = certificate + reference gap,

the certificate being the method's a-posteriori bound ``||w - w*_R|| <= c`` on the distance to
the exact retained optimum, and the reference gap the distance retraining itself may keep from
that optimum: a converged run's retraining stops at ``||grad F_R|| <= tol``, so
``||w_retrained - w*_R|| <= tol / lambda`` by lambda-strong convexity (an SGD run's retraining *is*
the reference trajectory: gap 0). The triangle inequality makes Delta a bound on
``||w - w_retrained||``, so the Gaussian mechanism of sensitivity Delta makes the two releases
(epsilon, delta)-indistinguishable.

The retrained side of the guarantee is released with the *same* sigma: retraining is the
reference, so its release takes the sensitivity of the unlearned release it is compared with
(``retrain --like DIR`` or ``--sensitivity C``); it has no certificate of its own to use.

A request whose method reports no finite certificate is refused (:class:`InputError`), and the
deletion ledger records it as failed, never as done. An identical repeat of a recorded release
returns the recorded noisy model byte for byte: drawing fresh noise would publish a second,
independent release of the same model and double the privacy loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import read_json
from miniunlearn.methods import UnlearnResult
from miniunlearn.privacy import MECHANISM_NAMES, ReleaseRequest, calibrate, gaussian_noise
from miniunlearn.runs import RESULT_JSON
from miniunlearn.service.ledger import ids_sha256

__all__ = ["REFERENCE_METHOD", "RELEASE_KEY", "reference_gap", "check_release", "publish", "ledger_options",
           "method_options", "release_like"]

REFERENCE_METHOD = "retrain"   # the other side of every guarantee
RELEASE_KEY = "release"        # in result.json / ledger statistics, and in the ledger's request options


def reference_gap(run) -> float:
    """``tol / lambda`` for a converged run (how far its retraining may stop from the exact optimum), else 0."""
    return float(run.config["tol"]) / run.l2 if run.mode == "converged" else 0.0


def check_release(method: str, request: ReleaseRequest | None) -> None:
    """Refuse, before any work, a release that cannot be calibrated."""
    if request is None:
        return
    if not isinstance(request, ReleaseRequest):
        raise InputError("release must be a miniunlearn.privacy.ReleaseRequest(epsilon, delta, ...)")
    if method == REFERENCE_METHOD and request.sensitivity is None:
        raise InputError("a certified release of the retrained model is the reference side of an unlearned "
                         "release and must use its sensitivity: give --like DIR (the unlearned release) or "
                         "--sensitivity C")
    calibrate(1.0, request.epsilon, request.delta, request.mechanism)  # epsilon valid for the mechanism


def _certificate(method: str, stats: dict) -> float:
    if method == REFERENCE_METHOD:
        return 0.0  # retraining is the reference itself
    value = stats.get("certificate")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"method {method!r} reported no finite certificate ||w - w_R|| <= c (got {value!r}); a "
                         "certified release needs one (Mini-Unlearning reports it with refine >= 1). Nothing was "
                         "released")
    return float(value)


def publish(run, result: UnlearnResult, request: ReleaseRequest | None) -> UnlearnResult:
    """``result`` with Gaussian noise added to its parameters and ``stats["release"]`` recording
    epsilon, delta, sigma, the certificate, the sensitivity and the mechanism (``request`` None:
    ``result`` unchanged)."""
    if request is None:
        return result
    check_release(result.method, request)
    certificate = _certificate(result.method, result.stats)
    gap = 0.0 if result.method == REFERENCE_METHOD else reference_gap(run)
    needed = certificate + gap
    if request.sensitivity is not None and request.sensitivity < needed:
        raise InputError(f"sensitivity {request.sensitivity:.6g} is below this model's certified distance to "
                         f"retraining ({needed:.6g} = certificate {certificate:.6g} + retraining's own tolerance "
                         f"{gap:.3g}); the guarantee would not hold. Nothing was released")
    sensitivity = needed if request.sensitivity is None else request.sensitivity
    sigma, mechanism = calibrate(sensitivity, request.epsilon, request.delta, request.mechanism)
    noisy = result.theta + gaussian_noise(result.theta.numel(), sigma, result.theta.dtype)
    record = {"epsilon": request.epsilon, "delta": request.delta, "sigma": sigma, "certificate": certificate,
              "reference_gap": gap, "sensitivity": sensitivity,
              "sensitivity_source": "certificate" if request.sensitivity is None else "given",
              "mechanism": mechanism}
    return UnlearnResult(noisy, result.method, result.options, {**result.stats, RELEASE_KEY: record})


def ledger_options(options: dict, request: ReleaseRequest | None) -> dict:
    """What identifies a request in the ledger: the method's options, and the release asked for
    (so a release is never served from an unreleased model, nor the other way round)."""
    return dict(options) if request is None else {**options, RELEASE_KEY: request.as_dict()}


def method_options(options: dict) -> dict:
    """The method's own options out of :func:`ledger_options`."""
    return {k: v for k, v in options.items() if k != RELEASE_KEY}


def release_like(directory: str | Path, forget_ids: np.ndarray, epsilon: float | None = None,
                 delta: float | None = None) -> ReleaseRequest:
    """The request that releases another model of the same forget request with the same sigma as
    the release in ``directory`` (its result.json): same epsilon, delta, sensitivity, mechanism.

    ``epsilon``/``delta``, when given, must equal the recorded ones.
    """
    path = Path(directory) / RESULT_JSON
    if not path.is_file():
        raise RunError(f"--like {directory}: no {RESULT_JSON} (not a model written by `miniunlearn forget`)")
    recorded = read_json(path, RESULT_JSON)
    release = recorded.get(RELEASE_KEY)
    if not isinstance(release, dict):
        raise InputError(f"--like {directory}: that model is not a certified release (no {RELEASE_KEY!r} in "
                         f"{RESULT_JSON}); release it with --epsilon and --delta first")
    digest = ids_sha256(np.asarray(forget_ids, dtype=np.int64))
    if digest not in (recorded.get("forget_ids_sha256"), recorded.get("cumulative_ids_sha256")):
        raise InputError(f"--like {directory}: that release is for another forget set than --ids; both sides of "
                         "a guarantee must forget the same rows")
    for name, given in (("epsilon", epsilon), ("delta", delta)):
        if given is not None and float(given) != float(release[name]):
            raise InputError(f"--{name} {given:g} differs from the {name} {release[name]:g} of the release in "
                             f"{directory}; omit it to take the recorded one")
    by_name = {v: k for k, v in MECHANISM_NAMES.items()}
    if release.get("mechanism") not in by_name:
        raise RunError(f"--like {directory}: unknown mechanism {release.get('mechanism')!r} in {RESULT_JSON}")
    return ReleaseRequest(release["epsilon"], release["delta"], release["sensitivity"], by_name[release["mechanism"]])
