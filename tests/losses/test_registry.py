"""The loss registry (dmlkit.losses.registry): every loss of the papers is registered, unknown
names and parameters fail with the known ones."""

import pytest

from dmlkit import losses

ALL = losses.available()


def test_registry_has_every_loss_of_the_papers():
    expected = {
        "contrastive", "triplet", "lifted_structure", "generalized_lifted_structure", "npair",
        "npair_ovo", "tuplet", "binomial_deviance", "angular", "ddml", "raw", "vthm",
        "multi_similarity", "osm_caa", "binomial+vthm", "raw+distance_weighted",
        "raw+semihard", "raw+vthm",
    }
    missing = expected - set(ALL)
    assert not missing, f"losses not registered: {sorted(missing)}"


def test_unknown_loss_lists_known_names():
    with pytest.raises(ValueError) as err:
        losses.build("multi_similarty")
    assert "multi_similarity" in str(err.value) and "triplet" in str(err.value)


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="gamma"):
        losses.build("triplet", gamma=3)


def test_spellings_resolve_and_every_name_builds():
    assert losses.LOSSES.kind == "loss" and len(losses.LOSSES) == len(ALL)
    assert losses.get("Multi-Similarity") is losses.get("multi_similarity")
    assert losses.get("GENERALIZED LIFTED STRUCTURE") is losses.get("generalized_lifted_structure")
    with pytest.raises(ValueError, match="Did you mean 'triplet'"):
        losses.get("triplett")
    assert losses.parameters("triplet") == ["margin", "form", "mining", "reduction", "normalize"]
