"""The project's exceptions are Python's standard kinds as well: what scikit-learn users catch."""

import pytest

from miniunlearn.core.errors import ConvergenceError, DataError, InputError, MiniUnlearnError, RunError


@pytest.mark.parametrize("kind", [DataError, InputError, RunError])
def test_bad_input_is_a_value_error_with_exit_code_2(kind):
    with pytest.raises(ValueError, match="broken"):
        raise kind("broken")
    assert issubclass(kind, MiniUnlearnError) and kind.exit_code == 2


def test_no_convergence_is_a_runtime_error_with_exit_code_3():
    with pytest.raises(RuntimeError, match="stalled"):
        raise ConvergenceError("stalled")
    assert issubclass(ConvergenceError, MiniUnlearnError) and ConvergenceError.exit_code == 3
    assert not issubclass(ConvergenceError, ValueError)
