"""The default target's checks: held-out images, the other drawing style, and the figures they report."""
import numpy as np

from conftest import tiny_target
from vispec_core.data import grounding, scenes as sc
from vispec_core.data.prompts import HELD_OUT_SCENE_SEED, TARGET_CHECK_SCENE_SEED
from vispec_core.evaluation import target_checks as tc


def test_held_out_scenes_are_neither_training_nor_benchmark_scenes():
    from vispec_core.data.tasks import task_prompts
    seeds = {s.seed for s in tc.held_out_scenes(50)}
    bench = {p.meta["scene_seed"] for task in ("caption", "ocr") for p in task_prompts(task, 50)}
    assert min(seeds) >= TARGET_CHECK_SCENE_SEED > HELD_OUT_SCENE_SEED and not seeds & bench


def test_other_style_draws_what_its_facts_say():
    for seed in range(12):
        image, scene = tc.other_style(seed)
        pixels = np.asarray(image)
        assert 1 <= len(scene.objects) <= 3 and scene.background == "white"
        for o in scene.objects:
            assert (pixels == tc.STYLE_COLORS[o.color]).all(-1).sum() > 300      # each colour is drawn
        truth = " ".join(f"There is a {o.color} {o.shape} in the image." for o in scene.objects)
        c = grounding.check(truth, scene)
        assert not c.false and c.n_true == len(scene.objects)


def test_summary_and_variety_on_known_records():
    recs = [{"grounded": g, "true_claims": t, "false_claims": f, "repetition_4": r, "tokens": n, "ended": e}
            for g, t, f, r, n, e in [(True, 5, [], 0.0, 200, True), (False, 2, ["x"], 0.5, 320, False),
                                     (True, 4, [], 0.1, 180, True)]]
    s = tc.summary(recs)
    assert s["grounded"] == 2 / 3 and s["median_repetition_4"] == 0.1 and s["median_tokens"] == 200 and s["ended"] == 2 / 3
    same = [{"ids": list(range(10)), "tokens": 10, "text": "One two three four. Five six seven eight."}] * 4
    varied = [{"ids": list(range(10 * i, 10 * i + 10)), "tokens": 10, "text": f"Answer {i} here now."} for i in range(4)]
    v = tc.variety(same, varied)
    assert v["ratio"] < 0.5 and v["most_shared_fraction"] == 1.0


def test_checks_run_end_to_end_on_a_tiny_target():
    target = tiny_target("llava_next")
    out = tc.run_checks(target, n_scenes=2, n_side=1, n_easyvqa=1, max_new_tokens=6, log=lambda *_: None)
    for key in ("describe_T0", "describe_T1", "blank_image", "other_scene_image", "other_style"):
        assert 0.0 <= out[key]["grounded"] <= 1.0 and out[key]["median_tokens"] <= 6
    assert len(out["records"]["describe_T0"]) == 2 and len(out["photos"]) == 5
    assert set(out["binding"]) == {"colour_at_position", "shape_at_position", "position_of_object", "questions"}


def test_binding_scores_each_direction(monkeypatch):
    """A target that answers the colour and shape at a place right but puts every shape in the center
    scores 1 / 1 on those and, on "Where is the <colour> <shape>?", only the objects that are there."""
    scenes = [sc.sample_scene(TARGET_CHECK_SCENE_SEED + i) for i in range(6)]
    shown = []                                   # (image, the scene it was rendered from)
    render = sc.render

    def rendered(scene):
        shown.append((render(scene), scene))
        return shown[-1][0]

    def answer(target, prompt, image, max_new_tokens=24, **_):
        scene = next(s for im, s in shown if im is image)
        o = next(o for o in scene.objects if sc._where(o.position) in prompt or f"{o.color} {o.shape}" in prompt)
        if prompt.startswith("Where"):
            return {"text": f"The {o.color} {o.shape} is in the center."}
        return {"text": f"It is a {o.color} {o.shape}."}

    monkeypatch.setattr(sc, "render", rendered)
    monkeypatch.setattr(tc, "answer", answer)
    out = tc.binding(None, scenes)
    objects = [o for s in scenes for o in s.objects]
    assert out["questions"] == len(objects) and out["colour_at_position"] == out["shape_at_position"] == 1.0
    assert out["position_of_object"] == sum(o.position == "center" for o in objects) / len(objects) < 1.0
