"""The teacher-output cache: what it stores equals the teacher's forward at real positions, whatever
the batch; its size is what validate predicts; a build resumes after a stop; a damaged entry or a
disk without room is one clear error. The numpy reference backend is the teacher (no framework)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine import reference, teacher_cache
from distill_engine.bert import init_parameters
from distill_engine.data import EncodedDataset
from distill_engine.graph import TEACHER_PREFIX, build_graph, build_mapping
from distill_engine.testing.fixtures import tiny_config

TEACHER = tiny_config(num_labels=2, num_hidden_layers=3)
TEACHER_STATE = init_parameters(TEACHER, 3)
TAPS = ("attention.0", "attention.2", "embeddings", "hidden.2", "hidden.3", "logits")


def _dataset(n: int, length: int = 12, seed: int = 0) -> EncodedDataset:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, TEACHER.vocab_size, (n, length)) * mask
    types = (rng.random((n, length)) < 0.3).astype(np.int32) * mask
    return EncodedDataset(ids, types, mask, labels=rng.integers(0, 2, n))


def _forward(batch):
    return reference.forward(TEACHER, TEACHER_STATE, batch).named()


def _build(root, data, taps=TAPS, dtype="float32", **kw):
    key = teacher_cache.cache_key(TEACHER, TEACHER_STATE, data, taps, dtype)
    return teacher_cache.build_or_open(root, key, data, TEACHER, _forward, backend="numpy", progress=False,
                                       say=lambda _: None, **kw)


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(teacher_cache, "SHARD_ROWS", 7)
    monkeypatch.setattr(teacher_cache, "BUILD_BATCH", 3)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 20), pick=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float16", "float32"]))
def test_outputs_equal_the_teachers_forward_at_real_positions(tmp_path_factory, n, pick, dtype):
    """For any rows and padded length, the cache hands the teacher's own outputs at the real
    positions (to float16 rounding) and zeros at the padded ones."""
    data = _dataset(n, seed=pick % 1000)
    cache, status = _build(tmp_path_factory.mktemp("cache"), data, dtype=dtype)
    assert status == "built"
    rng = np.random.default_rng(pick)
    rows = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
    length = min(data.max_length, int(data.lengths[rows].max()) + int(rng.integers(0, 3)))
    batch = {k: v[:, :length] for k, v in data.batch(rows).items() if k != "labels"}
    got = cache.outputs(rows, length)
    assert sorted(got) == sorted(TEACHER_PREFIX + t for t in TAPS)
    want = _forward(batch)  # padded to `length`: real positions do not depend on the padding
    rtol, atol = (2e-3, 2e-3) if dtype == "float16" else (1e-6, 1e-6)
    for tap in TAPS:
        value = got[TEACHER_PREFIX + tap]
        # the stored dtype (float16 by default): a backend widens it on its device
        assert value.dtype == np.dtype(dtype) and value.shape == want[tap].shape, tap
        for b, row in enumerate(rows):
            l = int(data.lengths[row])
            if tap == "logits":
                np.testing.assert_allclose(value[b], want[tap][b], rtol=rtol, atol=atol)
            elif tap.startswith("attention"):
                np.testing.assert_allclose(value[b, :, :l, :l], want[tap][b, :, :l, :l], rtol=rtol, atol=atol * 10)
                assert not value[b, :, l:].any() and not value[b, :, :, l:].any()
            else:
                np.testing.assert_allclose(value[b, :l], want[tap][b, :l], rtol=rtol, atol=atol)
                assert not value[b, l:].any()


def test_the_estimate_is_the_size_written_and_a_second_build_reuses(tmp_path, small_shards):
    data = _dataset(30)
    estimate = teacher_cache.estimate_bytes(data.lengths, TAPS, TEACHER, "float16")
    cache, status = _build(tmp_path, data, dtype="float16")
    assert status == "built" and len(cache.manifest["shards"]) == 5  # 30 rows, 7 a shard
    headers = cache.manifest["bytes"] - estimate
    assert 0 < headers < 1000 * len(cache.manifest["shards"])  # only the safetensors headers on top
    again, status = _build(tmp_path, data, dtype="float16")
    assert status == "reused" and again.path == cache.path
    # another dtype, other taps or other inputs are other entries
    assert _build(tmp_path, data, dtype="float32")[0].path != cache.path
    assert _build(tmp_path, data, taps=("logits",), dtype="float16")[0].path != cache.path
    assert _build(tmp_path, _dataset(30, seed=1), dtype="float16")[0].path != cache.path


def test_a_stopped_build_resumes_with_its_finished_shards(tmp_path, small_shards):
    data = _dataset(30)
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(teacher_cache.BuildStopped):
        _build(tmp_path / "a", data, stop=stop_after_two)
    entry = next((tmp_path / "a").iterdir())
    assert sorted(p.name for p in entry.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (entry / teacher_cache.MANIFEST).exists()  # incomplete: not usable
    first_shard = (entry / "shard-00000.safetensors").stat().st_mtime_ns
    resumed, status = _build(tmp_path / "a", data)
    assert status == "resumed"
    assert (entry / "shard-00000.safetensors").stat().st_mtime_ns == first_shard  # kept, not recomputed
    fresh, _ = _build(tmp_path / "b", data)
    rows = np.arange(30)
    for name, value in fresh.outputs(rows, 12).items():
        np.testing.assert_array_equal(resumed.outputs(rows, 12)[name], value)


def test_a_damaged_entry_is_one_clear_error(tmp_path, small_shards):
    cache, _ = _build(tmp_path, _dataset(10))
    shard = cache.path / cache.manifest["shards"][1]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(teacher_cache.CacheError, match=f"shard {shard.name} is missing or damaged; delete"):
        _build(tmp_path, _dataset(10))


def test_a_disk_without_room_is_refused_naming_the_field(tmp_path, monkeypatch):
    class Usage:
        free = 10_000

    monkeypatch.setattr(teacher_cache.shutil, "disk_usage", lambda _: Usage)
    with pytest.raises(teacher_cache.CacheError) as err:
        teacher_cache.check_room(tmp_path / "not" / "yet", 5_000_000)
    message = str(err.value)
    assert message.startswith("run.cache_dir: the teacher-output cache needs 5.0 MB in ")
    assert "10.0 kB free" in message and "teacher_cache = \"off\"" in message


def test_which_phases_can_cache():
    mapping = build_mapping("uniform", 2, TEACHER.num_hidden_layers)
    student = tiny_config(num_labels=2, num_hidden_layers=2, projection="shared", projection_dim=TEACHER.hidden_size)
    td1 = [("attention_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)]
    assert teacher_cache.usable(build_graph(td1, student, TEACHER, mapping, where="p", mask_padding=True), "auto") == (
        True, "")
    ok, why = teacher_cache.usable(build_graph(td1, student, TEACHER, mapping, where="p"), "auto")
    assert not ok and "mask_padding = true" in why and "attention_mse, hidden_mse" in why
    td2 = build_graph([("soft_cross_entropy", 1.0, 1.0)], student, TEACHER, mapping, where="p")
    assert td2.teacher_taps == ("logits",) and teacher_cache.usable(td2, "auto") == (True, "")
    assert teacher_cache.usable(td2, "off") == (False, 'teacher_cache = "off"')
    gold = build_graph([("hard_cross_entropy", 1.0, 1.0)], student, TEACHER, mapping, where="p")
    assert teacher_cache.usable(gold, "auto")[0] is False


def test_the_default_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(teacher_cache.CACHE_ENV, str(tmp_path / "c"))
    assert teacher_cache.cache_root("") == tmp_path / "c"
    assert teacher_cache.cache_root(str(tmp_path / "d")) == tmp_path / "d"
    monkeypatch.delenv(teacher_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert teacher_cache.cache_root("") == tmp_path / "x" / "distill-engine" / "teacher-outputs"


def test_the_manifest_says_what_the_entry_holds(tmp_path):
    data = _dataset(5)
    cache, _ = _build(tmp_path, data, dtype="float16")
    manifest = json.loads((cache.path / teacher_cache.MANIFEST).read_text())
    assert manifest["rows"] == 5 and manifest["taps"] == sorted(TAPS) and manifest["dtype"] == "float16"
    assert manifest["built_by"] == "numpy" and manifest["id"] == cache.path.name


def test_a_run_from_before_the_cache_fields_resumes_as_uncached():
    """recipe.json of a run started before the cache existed has no phases[i].teacher_cache nor
    mask_padding nor run.cache_dtype: that is "off", false, float16, so resuming it under the new
    defaults names the one change it needs (teacher_cache) and nothing else."""
    from distill_engine.fingerprint import differences

    old = {"run": {"seed": 1}, "phases": [{"name": "td1", "lr": 1.0}, {"name": "td2", "lr": 1.0}]}
    phases = [{"name": n, "lr": 1.0, "mask_padding": False, "teacher_cache": "off"} for n in ("td1", "td2")]
    same = {"run": {"seed": 1, "cache_dtype": "float16", "cache_dir": "/anywhere"}, "phases": phases}
    assert differences(old, {}, same, {}) == []
    auto = {**same, "phases": [phases[0], {**phases[1], "teacher_cache": "auto"}]}
    assert differences(old, {}, auto, {}) == ['phases[1] (td2).teacher_cache ("off" -> "auto")']


def test_the_losses_command_prints_the_masked_formulas(capsys):
    from distill_engine.cli import main
    from distill_engine.losses import loss_names

    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert all(f"{kind}\n" in out for kind in loss_names())
    assert "mask_padding\n" in out and "(h sum_b l_b^2)" in out
