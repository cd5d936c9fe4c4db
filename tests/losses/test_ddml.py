"""DDML loss (dmlkit.losses.ddml): naive per-pair loops, gradcheck and half precision (PML has
no DDML loss)."""

from naive import naive_ddml
from naive.loss_testing import naive_loop_tests

# name, kwargs, naive function, naive kwargs
CASES = [
    ("ddml", {}, naive_ddml, {}),
    ("ddml", {"tau": 1.0, "beta": 5.0, "reduction": "sum", "normalize": False}, naive_ddml,
     {"tau": 1.0, "beta": 5.0, "reduction": "sum", "normalize": False}),
]

TestNaiveLoops = naive_loop_tests(CASES)
