"""Why a bf16 speculative run can leave vanilla greedy: find the first differing token and show the
target's logits of both candidates there (one full-sequence forward over prompt + vanilla prefix).

    python scripts/bf16_tie_check.py caption:scene-1368227845 ocr:scene-1121801636

Equal or one-ulp-apart logits mean a near-tie that the 1-row (vanilla step) and n-row (tree verify)
bf16 matmuls round differently; a wide gap would mean a bug. Prompt ids are those of the benchmark
records (`prompt_id`), task before the colon; the first 3 prompts of each task are searched.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core import generate, load_draft, load_target  # noqa: E402
from vispec_core.data.tasks import task_prompts            # noqa: E402


def main(prompt_ids: list[str], kind: str = "vispec", max_new_tokens: int = 192) -> int:
    torch.set_num_threads(1)
    target = load_target("default")
    draft = load_draft(kind, target)
    for pid in prompt_ids:
        p = next(p for p in task_prompts(pid.split(":")[0], 3, 0) if p.prompt_id == pid)
        v = generate(target, p.prompt, p.images, max_new_tokens=max_new_tokens)
        s = generate(target, p.prompt, p.images, draft=draft, max_new_tokens=max_new_tokens)
        k = next((i for i, (a, b) in enumerate(zip(v.token_ids, s.token_ids)) if a != b), None)
        if k is None:
            print(f"{pid}: identical over {min(len(v.token_ids), len(s.token_ids))} tokens")
            continue
        inp = target.prepare(p.prompt, p.images)
        emb = torch.cat([inp.inputs_embeds, target.embed(torch.tensor([v.token_ids[:k]]))], 1)
        pos = torch.arange(emb.shape[1]).view(1, -1)
        logits = target.logits(target.forward(emb, pos, target.new_cache(emb.shape[1]))[0, -1]).float()
        a, b = v.token_ids[k], s.token_ids[k]
        print(f"{pid}: diverges at token {k}: vanilla {a} (logit {logits[a].item():.4f}), "
              f"{kind} {b} (logit {logits[b].item():.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["caption:scene-1368227845", "ocr:scene-1121801636"]))
