"""dmlkit.registry: one name -> object registry for losses, miners, backbones and datasets."""

import pytest

from dmlkit import data, losses, miners, models
from dmlkit.registry import Registry, normalize_name


def _shapes():
    reg = Registry("shape")

    @reg.register("square", "box", aliases=("quad",), sides=4)
    def square(size: float = 1.0, *, filled: bool = False):
        return ("square", size, filled)

    reg.add("triangle", lambda size=1.0: ("triangle", size), sides=3)
    return reg


def test_names_aliases_and_normalisation():
    reg = _shapes()
    assert reg.available() == ["box", "square", "triangle"]  # aliases are not listed
    assert normalize_name(" Multi-Similarity_Loss ") == "multisimilarityloss"
    for spelling in ("square", "SQUARE", "Sq-uare", "s_quare", "quad", "QUAD"):
        assert spelling in reg
        assert reg.canonical(spelling) == "square"
    assert reg.canonical("Box") == "box"
    assert reg.build("quad", size=2.0, filled=True) == ("square", 2.0, True)
    assert reg.facts("quad") == {"sides": 4} and reg.facts("triangle") == {"sides": 3}
    assert 3 not in reg and "circle" not in reg
    assert len(reg) == 3 and list(reg) == reg.available()


def test_unknown_name_suggests_and_lists():
    reg = _shapes()
    with pytest.raises(ValueError) as err:
        reg.get("sqare")
    msg = str(err.value)
    assert "unknown shape 'sqare'" in msg and "Did you mean 'square'" in msg
    assert "Known shapes: box, square, triangle" in msg
    with pytest.raises(ValueError, match=r"unknown shape 'zzz'\. Known shapes"):
        reg.get("zzz")


def test_unknown_parameter_lists_the_parameters():
    reg = _shapes()
    with pytest.raises(ValueError, match=r"shape 'square' has no parameter\(s\) \['colour'\]; "
                                         r"its parameters are \['size', 'filled'\]"):
        reg.build("square", colour="red")
    assert reg.parameters("triangle") == ["size"]


def test_a_name_cannot_be_taken_twice():
    reg = _shapes()
    with pytest.raises(ValueError, match="already registered"):
        reg.add("Tri-angle", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.add("circle", object(), aliases=("quad",))
    reg.add("triangle", reg.get("triangle"))  # the same object again is fine


@pytest.mark.parametrize("lookup, name, kind", [
    (losses.get, "multi-similarity", "loss"),
    (miners.get, "semi-hard", "miner"),
    (data.dataset_info, "CUB", "dataset"),
])
def test_every_registry_of_the_package_normalises_alike(lookup, name, kind):
    assert lookup(name) is not None
    assert lookup(name.upper().replace("-", "_")) == lookup(name)
    with pytest.raises(ValueError, match=f"unknown {kind}"):
        lookup(name + "zzz")


def test_backbones_registry():
    assert models.feature_dim("ResNet-50") == models.feature_dim("resnet50") == 2048
    with pytest.raises(ValueError, match="unknown backbone"):
        models.feature_dim("resnet51x")
