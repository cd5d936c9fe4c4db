"""The miners' input checks (dmlkit.miners): each wrong input named in its error message (the
cases the mutation run, benchmarks/mutation.py, found without a test)."""

import pytest
import torch

from dmlkit import miners


def test_each_wrong_input_is_named():
    S = torch.zeros(3, 4)
    ok = torch.zeros(3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^S must be a 2-D \(B, M\) tensor, got \(4,\)$"):
        miners.hard(torch.zeros(4), ok[0], ok[0])
    with pytest.raises(ValueError, match=r"^S must be a 2-D \(B, M\) tensor, got list$"):
        miners.hard([[0.0]], ok, ok)
    for bad in (ok.float(), ok[:, :3], [[True] * 4] * 3):
        with pytest.raises(ValueError, match=r"^pos must be a bool tensor of the shape of S "
                                             r"\(3, 4\)$"):
            miners.hard(S, bad, ok)
        with pytest.raises(ValueError, match=r"^neg must be a bool tensor of the shape of S "
                                             r"\(3, 4\)$"):
            miners.vthm(S, ok, bad)
