import pytest
import torch

from vispec_core.targets.kv_cache import KVCache


def filled(n_prefix=3, n_new=5):
    cache = KVCache(layers=2, kv_heads=1, head_dim=2, capacity=16, dtype=torch.float32, device="cpu")
    k = torch.arange(n_prefix + n_new, dtype=torch.float32).view(1, -1, 1).expand(1, -1, 2)
    for layer in range(2):
        cache.write(layer, k[:, :n_prefix], -k[:, :n_prefix])
    cache.commit(n_prefix)
    for layer in range(2):
        keys, values = cache.write(layer, k[:, n_prefix:] + 100 * layer, -k[:, n_prefix:])
        assert keys.shape == (1, n_prefix + n_new, 2)     # prefix + new, as views of the storage
    return cache


def test_commit_moves_the_accepted_path_into_contiguous_slots():
    cache = filled()
    cache.commit(5, [0, 2, 4])                              # new positions 3, 5, 7 survive
    assert cache.length == 6
    assert cache.storage[0, 0, 0, :6, 0].tolist() == [0, 1, 2, 3, 5, 7]
    assert cache.storage[1, 0, 0, :6, 0].tolist() == [0, 1, 2, 103, 105, 107]
    assert cache.storage[0, 1, 0, :6, 0].tolist() == [0, -1, -2, -3, -5, -7]


def test_commit_of_a_prefix_path_copies_nothing_and_commit_all():
    cache = filled()
    before = cache.storage.clone()
    cache.commit(5, [0, 1])
    assert cache.length == 5 and torch.equal(cache.storage, before)
    cache = filled()
    cache.commit(5)
    assert cache.length == 8


def test_full_cache_is_refused_with_advice():
    cache = filled()
    with pytest.raises(ValueError, match="capacity"):
        cache.check_room(14)
