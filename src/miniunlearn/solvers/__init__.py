"""Numerical solvers on top of the models: conjugate gradients, line-search Newton-CG, and the
Anderson-accelerated fixed-point iteration with its contraction estimate."""
