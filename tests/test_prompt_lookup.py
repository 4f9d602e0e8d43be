"""Prompt-lookup decoding as a draft of our decoder: its proposals are transformers' (the same rule,
so `prompt_lookup` and `hf_prompt_lookup` differ only in the forward), and the output is vanilla's."""
import random

import pytest
import torch
from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

from vispec_core import load_draft
from vispec_core.data.tasks import task_prompts
from vispec_core.decoding.decode import decode_speculative, decode_vanilla
from vispec_core.drafts.prompt_lookup import PromptLookupSession, PromptLookupConfig

from conftest import tiny_target


def test_proposals_are_transformers_prompt_lookup():
    rng = random.Random(0)
    eos = 7
    hf = PromptLookupCandidateGenerator(eos_token_id=torch.tensor([eos]), num_output_tokens=10,
                                        max_matching_ngram_size=2, max_length=10**6)
    found = 0
    for _ in range(300):
        history = [rng.randrange(12) for _ in range(rng.randrange(2, 60))]   # small alphabet: many matches
        ours = PromptLookupSession(PromptLookupConfig(), list(history), {eos}).propose(history[-1])
        ids, _ = hf.get_candidates(torch.tensor([history]))
        theirs = ids[0, len(history):].tolist()
        assert ours == theirs, history
        found += bool(theirs)
    assert found > 200                  # the check has teeth: most histories give a proposal


def test_prompt_lookup_keeps_greedy_output_and_accepts():
    accepted = 0
    for family in ("llava_next", "qwen2_5_vl"):
        target = tiny_target(family)
        draft = load_draft("prompt_lookup", target=target)
        for p in task_prompts("caption", 2, seed=1) + task_prompts("text", 2, seed=1):
            inputs = target.prepare(p.prompt, p.images)
            want, _ = decode_vanilla(target, inputs, 40)
            got, stats = decode_speculative(target, draft, inputs, 40)
            assert got == want, (family, p.prompt_id)
            assert all(0 <= a <= 10 for a in stats["accept_lengths"])
            accepted += sum(stats["accept_lengths"])
    assert accepted > 0                 # random tiny models repeat themselves at times: lookups hit


def test_prompt_lookup_takes_no_options():
    with pytest.raises(ValueError, match="no overrides"):
        load_draft("prompt_lookup", target=tiny_target("llava_next"), num_tokens=4)
