"""scripts/probe_binding.py's parts: the cell under an object, and the probe's test accuracy, on cases
whose answer is known."""
import pytest
import torch

from conftest import script_module


@pytest.fixture(scope="module")
def probe_binding():
    return script_module("probe_binding")


def test_the_cell_an_object_covers_most(probe_binding):
    from vispec_core.data import scenes as sc

    for seed in range(6):
        scene = sc.sample_scene(seed)
        image = sc.render(scene)
        for o in scene.objects:
            cell = probe_binding.object_cell(image, o.color)
            row, col = divmod(cell, 14)
            third = sc.CELLS.index(o.position)
            assert row * 3 // 14 == third // 3 and col * 3 // 14 == third % 3, (seed, o)   # inside its grid cell


def test_the_probe_reads_what_is_there_and_nothing_else(probe_binding):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (400,), generator=g)
    train = torch.arange(400) < 300
    signal = torch.randn(5, 32, generator=g)[y] + 0.3 * torch.randn(400, 32, generator=g)
    assert probe_binding.probe(signal, y, train) > 0.95
    noise = torch.randn(400, 32, generator=g)
    assert probe_binding.probe(noise, y, train) < 0.45          # chance is 0.2
