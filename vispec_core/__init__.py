"""vispec: ViSpec (vision-aware speculative decoding for VLMs), reproduced.

    from vispec_core import load_target, load_draft, generate
"""
from .decoding.decode import Generation, generate
from .targets import load_target


def load_draft(spec: str, target, **kwargs):
    """'vispec' | 'eagle2' | 'medusa' (shipped, trained), 'random:<kind>' (untrained), or a draft folder."""
    from .drafts import load_draft as _load_draft

    return _load_draft(spec, target=target, **kwargs)


__all__ = ["load_target", "load_draft", "generate", "Generation"]
