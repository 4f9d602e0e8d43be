"""Decoding: the EAGLE-2 draft tree, verification, and the loops (`prefill`, `decode_vanilla`,
`decode_speculative`, `generate`)."""
from ..targets.kv_cache import KVCache
from .decode import Generation, decode_speculative, decode_vanilla, generate, prefill
from .tree import DraftTree, ancestor_mask, chain_tree, draft_tree
from .verify import Acceptance, accept_greedy, accept_sampling, target_probs

__all__ = ["Acceptance", "DraftTree", "Generation", "KVCache", "accept_greedy", "accept_sampling", "ancestor_mask",
           "chain_tree", "decode_speculative", "decode_vanilla", "draft_tree", "generate", "prefill", "target_probs"]
