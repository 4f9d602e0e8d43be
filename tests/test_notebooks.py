"""Every numbered notebook runs under papermill with smoke parameters and writes what it promises,
without touching the committed results/."""
import math

import pandas as pd
import pytest

from vispec_core.reproduce import NOTEBOOKS, notebooks, run_notebook



def check_redundancy(results):
    single = pd.read_csv(results / "tables" / "redundancy_single_layer.csv")
    assert ((single["measured"] - single["closed_form"]).abs() < 1e-9).all()
    assert single["measured"].is_monotonic_decreasing
    layers = pd.read_csv(results / "tables" / "redundancy_target_layers.csv")
    assert layers["image_attention"].between(0, 1).all()


# notebook -> (extra smoke parameters, tables it must write with their required columns, figures, check)
EXPECTED = {
    "01_redundancy_attention": (
        {},
        {"redundancy_single_layer.csv": ["R", "measured", "closed_form"],
         "redundancy_target_layers.csv": ["layer", "image_attention", "image_share"]},
        ["redundancy_single_layer.png", "redundancy_target_layers.png"],
        check_redundancy,
    ),
}


def test_every_notebook_has_expectations():
    assert sorted(p.stem for p in notebooks()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_smoke_run(name, tmp_path):
    params, tables, figures, check = EXPECTED[name]
    run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                 {"SMOKE": True, "RESULTS_DIR": str(tmp_path / "results"), **params})
    for table, columns in tables.items():
        df = pd.read_csv(tmp_path / "results" / "tables" / table)
        assert len(df) > 0 and set(columns) <= set(df.columns), table
        numbers = df.select_dtypes("number").to_numpy().ravel()
        assert all(math.isfinite(x) for x in numbers), table
        assert (tmp_path / "results" / "tables" / table.replace(".csv", ".md")).is_file()
    for fig in figures:
        assert (tmp_path / "results" / "figures" / fig).stat().st_size > 1000
    assert any((tmp_path / "results" / "raw").glob("*.jsonl"))
    check(tmp_path / "results")


def test_misspelt_parameter_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no parameter"):
        run_notebook(NOTEBOOKS / "01_redundancy_attention.ipynb", tmp_path / "x.ipynb", {"SMOKEE": True})
