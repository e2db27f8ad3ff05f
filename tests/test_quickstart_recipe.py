"""recipes/quickstart_sst2.toml (the README's quickstart) is the reduced run of docs/results.md written
as a recipe file, with bucketed batches instead of fixed-length ones, three TD2 epochs instead of one
(evaluated every 100 steps) and its own output folder: it resolves to the page's `--set` command's
recipe but for those fields, as docs/results.md says.
Loading a recipe reads no data, so this runs without ../shared."""

from pathlib import Path

from conftest import reduced_run_argv
from distill_engine.cli.main import _parser
from distill_engine.cli.run import _overrides
from distill_engine.recipe import load_recipe, recipe_to_dict

ROOT = Path(__file__).resolve().parents[1]


def _differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} (the --set command) != {b!r} (the recipe file)"]


def test_the_quickstart_recipe_is_the_reduced_run_with_bucketed_batches(monkeypatch):
    monkeypatch.chdir(ROOT)  # as the README runs it: from the repository root (--set paths, output_dir)
    args = _parser().parse_args(reduced_run_argv())
    assert Path(args.recipe) == Path("recipes/tinybert_sst2.toml")
    command = recipe_to_dict(load_recipe(Path(args.recipe), _overrides(args)))
    quickstart = recipe_to_dict(load_recipe(ROOT / "recipes" / "quickstart_sst2.toml"))
    assert _differences(command, quickstart) == [
        ".data.batching: 'fixed' (the --set command) != 'bucketed' (the recipe file)",
        ".phases[2].epochs: 1.0 (the --set command) != 3.0 (the recipe file)",
        ".phases[2].eval_every: 40 (the --set command) != 100 (the recipe file)",
        ".run.output_dir: 'runs/sst2_reduced' (the --set command) != 'runs/quickstart_sst2' (the recipe file)"]
    # and it is the reduced run, not the full recipe
    assert [(p["name"], p["max_examples"], p["epochs"]) for p in quickstart["phases"][:3]] == [
        ("teacher", 3200, 1), ("td1", 3200, 1), ("td2", 3200, 3)]


def test_the_readme_quickstart_runs_the_quickstart_recipe():
    text = (ROOT / "README.md").read_text()
    assert ".venv/bin/distill-engine run recipes/quickstart_sst2.toml --backend torch" in text
    assert ".venv/bin/distill-engine run recipes/quickstart_sst2.toml --backend mindspore" in text
