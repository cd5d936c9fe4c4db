"""Angular loss (dmlkit.losses.angular): naive per-pair / per-negative loops, gradcheck, half
precision and PML (through a normalisation layer, see the docstring)."""

from naive import naive_angular
from naive.loss_testing import naive_loop_tests, pml_tests
from optional_pml import pml_losses

from dmlkit import losses


# name, kwargs, naive function, naive kwargs
CASES = [
    ("angular", {}, naive_angular, {}),
    ("angular", {"alpha": 36}, naive_angular, {"alpha": 36}),
]

TestNaiveLoops = naive_loop_tests(CASES)

PML_CASES = [
    ("angular", lambda: losses.build("angular", alpha=40), lambda: pml_losses.AngularLoss(
        alpha=40), 1),
    ("angular-45", lambda: losses.build("angular", alpha=45), lambda: pml_losses.AngularLoss(
        alpha=45), 1),
]


# gradients w.r.t. the input of a normalisation layer, since PML's angular loss multiplies
# by un-normalised negatives, which only agrees for unit inputs (docstring)
TestMatchesPML = pml_tests(PML_CASES, unit=True)
