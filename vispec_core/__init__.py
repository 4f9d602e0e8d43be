"""vispec: ViSpec (vision-aware speculative decoding for VLMs), reproduced.

    from vispec_core import load_target, load_draft, generate
"""
from .decoding import decode as _decode
from .decoding.decode import Generation, generate
from .targets import load_target


def _choose_tree(*args, **kwargs):
    from .evaluation.tree_choice import choose_tree     # imported on the first 'auto' tree only

    return choose_tree(*args, **kwargs)


_decode.tree_chooser = _choose_tree      # generate's tree="auto"


def load_draft(spec: str, target, **kwargs):
    """'vispec' | 'eagle2' | 'medusa' (shipped, trained), 'random:<kind>' (untrained), or a draft folder."""
    from .drafts import load_draft as _load_draft

    return _load_draft(spec, target=target, **kwargs)


__all__ = ["load_target", "load_draft", "generate", "Generation"]
