"""The EAGLE-2 draft: the ViSpec draft without its vision adaptor, so the one layer sees every image
embedding in its sequence and no global feature (DraftConfig.for_target turns both switches off)."""
from __future__ import annotations

from .vispec import ViSpecDraft


class Eagle2Draft(ViSpecDraft, kind="eagle2"):
    pass
