"""Preallocated key/value cache, written in place and compacted to an accepted path."""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer in one preallocated tensor.

    storage: [layers, 2, kv_heads, capacity, head_dim] (batch 1). `length` is the number of committed
    positions; a forward over new tokens writes them at `length .. length+n` and `commit` decides
    which of them stay.
    """

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str):
        self.storage = torch.zeros(layers, 2, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.kv = [(kv[0], kv[1]) for kv in self.storage]     # per layer: (keys, values) views, made once
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.storage.shape[3]

    def check_room(self, n: int) -> None:
        if self.length + n > self.capacity:
            raise ValueError(
                f"KV cache full: {self.length} positions used + {n} new > capacity {self.capacity}. "
                "Lower max_new_tokens or the prompt length, or build the cache with a larger capacity."
            )

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([kv_heads, n, head_dim]) after the committed prefix; return keys and values
        of prefix + new tokens as views."""
        keys, values = self.kv[layer]
        end = self.length + k.shape[-2]
        keys[:, self.length:end] = k
        values[:, self.length:end] = v
        return keys[:, :end], values[:, :end]

    def commit(self, n_new: int, keep: list[int] | None = None, index: torch.LongTensor | None = None) -> None:
        """Make new positions permanent. `keep` lists which of the n_new written positions stay (an
        accepted tree path, in order); they move into contiguous slots. None keeps all n_new.
        index: `keep` already on the cache's device, which spares a copy from the host (and its wait)."""
        if keep is None:
            self.length += n_new
            return
        keep = [int(i) for i in keep]
        if keep != list(range(len(keep))):
            src = (index if index is not None else torch.tensor(keep, device=self.storage.device)) + self.length
            # indexing with src gathers (copies) first, so overlapping source and destination are safe
            self.storage[:, :, :, self.length:self.length + len(keep)] = self.storage[:, :, :, src]
        self.length += len(keep)

    def truncate(self, length: int) -> None:
        self.length = length
