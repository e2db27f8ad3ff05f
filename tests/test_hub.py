"""Models named the Hugging Face Hub way resolve through the local Hugging Face cache, offline.

The caches here are laid out as huggingface_hub lays them (`models--org--name/blobs/<sha256>`,
`snapshots/<revision>/<file>` symlinks into blobs, `refs/main` naming the revision), built in a
tmp dir from the tiny fixture BERT and from the shared MiniLM; huggingface_hub's own
`scan_cache_dir` must read each as a cached repo. Nothing here touches the network: every test
runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import shared_path
from distill_engine.cli import main
from distill_engine.errors import RecipeError
from distill_engine.fingerprint import digest_path, input_digests
from distill_engine.hub import looks_like_repo_id
from distill_engine.planning import plan
from distill_engine.recipe import load_recipe, recipe_to_dict
from distill_engine.testing.fixtures import write_hf_bert, write_tiny_recipe
from test_cli_errors import _error

huggingface_hub = pytest.importorskip("huggingface_hub")
REVISION = "0123456789abcdef0123456789abcdef01234567"


def lay_out_cache(cache: Path, repo_id: str, model: Path, revision: str = REVISION) -> Path:
    """`model`'s files in `cache` as huggingface_hub stores a download; returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(model.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        os.symlink(file.resolve(), blob)  # (the shared MiniLM is not copied: a blob may be any file)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    cached = {r.repo_id: [rev.commit_hash for rev in r.revisions] for r in huggingface_hub.scan_cache_dir(cache).repos}
    assert cached.get(repo_id) == [revision]  # huggingface_hub reads the layout as its own
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_repo_ids_and_paths():
    for name in ("bert-base-uncased", "org/name", "sentence-transformers/all-MiniLM-L6-v2", "a.b_c"):
        assert looks_like_repo_id(name), name
    for name in ("/abs/path", "./x", "../x", "~/x", "a/b/c", "org--x", "", "a..b", "x/", "-x", "a b"):
        assert not looks_like_repo_id(name), name


def test_a_hub_name_resolves_to_its_cached_snapshot(tmp_path, offline, planonly, monkeypatch):
    snapshot = lay_out_cache(offline, "org/tiny-bert", write_hf_bert(tmp_path / "model"))
    recipe = write_tiny_recipe(tmp_path / "r")
    loaded = load_recipe(recipe, ['teacher.path="org/tiny-bert"'])
    assert loaded.teacher.path == "org/tiny-bert"  # no such folder here: left as the Hub name
    p = plan(loaded, planonly)
    assert Path(p.recipe.teacher.path) == snapshot and p.teacher_config.num_hidden_layers == 4
    assert p.vocab == snapshot / "vocab.txt"
    # recipe.json records the snapshot; the fingerprint hashes its files like a local folder's
    assert input_digests(recipe_to_dict(p.recipe))["teacher.path"] == digest_path(str(tmp_path / "model"))

    # the same from the recipe file itself, and through HF_HOME (its hub/ folder) for a bare name
    hf_home = tmp_path / "hf-home"
    lay_out_cache(hf_home / "hub", "tiny-bert", tmp_path / "model")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    text = recipe.read_text().replace('path = "teacher"', 'path = "tiny-bert"')
    assert 'path = "tiny-bert"' in text
    recipe.write_text(text)
    p = plan(load_recipe(recipe), planonly)
    assert p.recipe.teacher.path == str(hf_home / "hub" / "models--tiny-bert" / "snapshots" / REVISION)


def test_a_local_folder_wins_over_the_cache(tmp_path, offline, planonly):
    lay_out_cache(offline, "teacher", write_hf_bert(tmp_path / "model"))
    recipe = write_tiny_recipe(tmp_path / "r")  # its teacher.path = "teacher", a folder beside the recipe
    p = plan(load_recipe(recipe), planonly)
    assert p.recipe.teacher.path == str(tmp_path / "r" / "teacher")


def test_a_name_that_resolves_nowhere_is_one_line_naming_the_field_and_what_was_tried(tmp_path, offline, planonly,
                                                                                      capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", "planonly", "--set", 'teacher.path="org/missing"'])
    assert err.startswith('error: teacher.path: "org/missing" is not a file or folder here')
    assert f"nor in the Hugging Face cache ({offline / 'models--org--missing'}/snapshots/" in err
    assert "set run.hub_download = true to download it" in err
    # downloads allowed, but offline: said so, and nothing is fetched
    err = _error(capsys, ["validate", str(recipe), "--backend", "planonly", "--set", 'teacher.path="org/missing"',
                          "--set", "run.hub_download=true"])
    assert "run.hub_download is on, but HF_HUB_OFFLINE is set: nothing is downloaded" in err
    assert not (offline / "models--org--missing").exists()
    # a Hub name is a Hugging Face checkpoint: student.init's default format says otherwise
    with pytest.raises(RecipeError, match=r'^student.init: "org/student" is not a file or folder here.*needs '
                                          r'student.format = "huggingface" \(now "neutral"\)$'):
        plan(load_recipe(recipe, ['student.init="org/student"']), planonly)


def test_the_shared_minilm_from_a_hub_cache(tmp_path, offline, planonly):
    minilm = shared_path("models", "all-MiniLM-L6-v2")
    snapshot = lay_out_cache(offline, "sentence-transformers/all-MiniLM-L6-v2", minilm)
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart_sst2.toml"
    shared_path("data", "glue", "SST-2", "dev.tsv")
    p = plan(load_recipe(quickstart, ['teacher.path="sentence-transformers/all-MiniLM-L6-v2"',
                                      f'run.output_dir="{tmp_path / "run"}"']), planonly)
    assert Path(p.recipe.teacher.path) == snapshot
    assert (p.teacher_config.num_hidden_layers, p.teacher_config.hidden_size) == (6, 384)
    # the same files as the shared folder: a run reading either has the same inputs
    local = plan(load_recipe(quickstart, [f'run.output_dir="{tmp_path / "run"}"']), planonly)
    assert input_digests(recipe_to_dict(p.recipe)) == input_digests(recipe_to_dict(local.recipe))


def test_validate_cli_accepts_a_cached_hub_name(tmp_path, offline, planonly, capsys):
    lay_out_cache(offline, "org/tiny-bert", write_hf_bert(tmp_path / "model"))
    recipe = write_tiny_recipe(tmp_path / "r")
    assert main(["validate", str(recipe), "--backend", "planonly", "--set", 'teacher.path="org/tiny-bert"']) == 0
    assert str(offline / "models--org--tiny-bert" / "snapshots" / REVISION) in capsys.readouterr().out


def test_a_download_only_when_allowed_and_online(tmp_path, offline, planonly, monkeypatch, capsys):
    """No network here: huggingface_hub's snapshot_download is replaced by one that 'downloads' by
    laying out the cache, so the online branch is exercised as the engine calls it."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from distill_engine.hub import DOWNLOAD_PATTERNS

    model = write_hf_bert(tmp_path / "model")
    calls = []

    def fake(repo_id, *, cache_dir, local_files_only=False, allow_patterns=None):
        calls.append((repo_id, local_files_only, allow_patterns))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        if repo_id == "org/unreachable":
            raise OSError("Connection refused")
        return str(lay_out_cache(Path(cache_dir), repo_id, model))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    recipe = write_tiny_recipe(tmp_path / "r")
    with pytest.raises(RecipeError, match="set run.hub_download = true"):  # online, but not allowed
        plan(load_recipe(recipe, ['teacher.path="org/tiny-bert"']), planonly)
    assert calls == [("org/tiny-bert", True, None)]
    p = plan(load_recipe(recipe, ['teacher.path="org/tiny-bert"', "run.hub_download=true"]), planonly)
    assert calls[-1] == ("org/tiny-bert", False, DOWNLOAD_PATTERNS)
    assert Path(p.recipe.teacher.path) == offline / "models--org--tiny-bert" / "snapshots" / REVISION
    err = _error(capsys, ["validate", str(recipe), "--backend", "planonly", "--set", 'teacher.path="org/unreachable"',
                          "--set", "run.hub_download=true"])
    assert err.endswith("; downloading it from the Hub failed (Connection refused)")
