"""(epsilon, delta)-certified releases: the Gaussian mechanism on a certified distance.

:mod:`~miniunlearn.privacy.gaussian` calibrates the noise (the classic and the analytic Gaussian
mechanism) and draws it from the operating system's randomness. Pure computation on numbers and
tensors: the forget service (:mod:`miniunlearn.service.release`) applies it to unlearned models.
"""

from miniunlearn.privacy.gaussian import (
    MECHANISM_NAMES,
    MECHANISMS,
    ReleaseRequest,
    analytic_sigma,
    calibrate,
    classic_sigma,
    gaussian_noise,
    privacy_loss_delta,
)

__all__ = ["MECHANISMS", "MECHANISM_NAMES", "ReleaseRequest", "analytic_sigma", "calibrate", "classic_sigma", "gaussian_noise",
           "privacy_loss_delta"]
