import pytest
import torch

from vispec_core.evaluation.redundancy import image_attention_mass, image_share, single_layer_attention, unique_token_weight


def test_closed_form_matches_one_attention_layer():
    for R in (1, 7, 196, 5000):
        m = single_layer_attention(R, seed=R)
        assert m["measured"] == pytest.approx(m["closed_form"], rel=1e-9)


def test_unique_token_fades_as_redundancy_grows():
    ms = [single_layer_attention(R, seed=1) for R in (1, 10, 100, 1000)]
    weights = [m["measured"] for m in ms]
    assert all(a > b for a, b in zip(weights, weights[1:]))
    assert weights[-1] < 1e-2
    assert ms[-1]["distance_to_average"] < ms[0]["distance_to_average"] / 10
    assert float(unique_token_weight(10**9, 0.0, 0.0)) < 1e-8


def test_image_attention_mass_is_a_per_layer_fraction(target, photos):
    inputs = target.prepare("Describe it.", [photos["coffee"]])
    mass = image_attention_mass(target, inputs)
    assert mass.shape == (target.num_layers,)
    assert ((mass >= 0) & (mass <= 1)).all()
    assert 0 < image_share(inputs) < 1
    with pytest.raises(ValueError, match="no image"):
        image_attention_mass(target, target.prepare("No picture here."))
