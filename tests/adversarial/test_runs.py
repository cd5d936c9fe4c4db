"""dmlkit.adversarial.runs: the loss specs of notebook 09."""

from __future__ import annotations

import pytest
from feature_blobs import one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv


def test_parse_loss_spec():
    assert adv.parse_loss_spec("triplet") == ("metric", "triplet")
    assert adv.parse_loss_spec("daml:npair") == ("daml", "npair")
    assert adv.parse_loss_spec("daml+sp:triplet") == ("daml+sp", "triplet")
    with pytest.raises(ValueError, match="known"):
        adv.parse_loss_spec("gan:triplet")
    with pytest.raises(ValueError, match="multi_similarity"):
        adv.parse_loss_spec("not_a_loss")
