"""TinyBERT's data augmentation: properties of the draws (hypothesis), GloVe neighbours against a
brute-force reference, the vector file reader, and the file job (formats, pairs, duplicates,
manifest, resuming in chunks, refusing to overwrite)."""

import gzip
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.augment import job as job_module
from distill_engine.augment.augmenter import Augmenter, AugmentSettings, default_n
from distill_engine.augment.glove import WordVectors, check_vectors_file
from distill_engine.augment.job import AugmentJob, AugmentStopped, manifest_path, partial_dir, run_job
from distill_engine.augment.words import STOP_WORDS, basic_splitter, eligible, split_words
from distill_engine.cli import main
from distill_engine.data import Task, get_task, read_task_file
from distill_engine.errors import DataError

WORDS = ("good great fine nice bad awful poor dull movie film plot actor story fun boring cast script scene "
         "music score light dark slow fast long short funny sad").split()
FILLER = ["the", "a", "is", "was", "very", "not", "and", "but", "it", "this", ",", ".", "!", "'s", "42", "x-ray"]


def _vectors(seed=0, dim=6, extra=()):
    words = WORDS + list(extra)
    rng = np.random.default_rng(seed)
    return WordVectors(words, rng.normal(size=(len(words), dim)).astype(np.float32))


def _write_glove(path, vectors: WordVectors, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(len(vectors.words), 6)).round(4)
    path.write_text("".join(f"{w} " + " ".join(f"{x:g}" for x in v) + "\n" for w, v in zip(vectors.words, raw)))
    return path


_WORD = st.sampled_from(WORDS + FILLER + ["Great", "MOVIE", "Café", "unknownword"])
_TEXT = st.lists(_WORD, min_size=0, max_size=12).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=5), n=st.integers(0, 12), p=st.floats(0, 1),
       k=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_draws_keep_texts_distinct_at_most_n_and_change_only_eligible_words(texts, n, p, k, seed):
    aug = Augmenter(_vectors(), AugmentSettings(n=n, p=p, k=k, seed=seed))
    new, counts = aug.augment(texts, list(range(len(texts))), [0] * len(texts))
    assert counts.new_texts == sum(map(len, new))
    splitter = basic_splitter()
    for text, versions in zip(texts, new):
        assert len(versions) <= n and len(set(versions)) == len(versions) and text not in versions
        (words, _), = split_words(splitter, [text])
        for version in versions:
            (changed, _), = split_words(splitter, [version])
            assert len(changed) == len(words)  # one word for one word, nothing else moves
            for before, after in zip(words, changed):
                if before.normalized != after.normalized:
                    assert eligible(before.normalized)
                    assert after.normalized in aug._neighbours[before.normalized]
            # the text between the words (spacing, punctuation) is the original's
            assert re.sub(r"\w+", "", version) == re.sub(r"\w+", "", text) or "-" in text


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=4), n=st.integers(0, 10), seed=st.integers(0, 1000))
def test_p_zero_changes_nothing(texts, n, seed):
    new, counts = Augmenter(_vectors(), AugmentSettings(n=n, p=0.0, seed=seed)).augment(texts, range(len(texts)),
                                                                                       [0] * len(texts))
    assert new == [[] for _ in texts] and counts.new_texts == 0


def test_eligible_words_are_letters_only_and_not_stop_words():
    assert eligible("movie") and not eligible("the") and not eligible("42") and not eligible("x-ray")
    assert not eligible("don't") and "'s" in STOP_WORDS and len(STOP_WORDS) == 181
    (words, _), = split_words(basic_splitter(), ["The Café's  GREAT!"])
    assert [(w.normalized, "The Café's  GREAT!"[w.start:w.end]) for w in words] == [
        ("the", "The"), ("cafe", "Café"), ("'", "'"), ("s", "s"), ("great", "GREAT"), ("!", "!")]


def test_replacements_keep_the_casing_of_the_word_they_replace():
    vectors = WordVectors(["great", "good"], np.array([[1.0, 0.0], [0.9, 0.1]], np.float32))
    aug = Augmenter(vectors, AugmentSettings(n=3, p=1.0, k=1))
    assert aug.augment(["Great, GREAT and great."], [0], [0])[0] == [["Good, GOOD and good."]]


def test_the_same_seed_gives_the_same_draws_whatever_the_batching():
    texts = ["good movie , bad plot", "fine actor and dull story", "the fun cast"]
    a = Augmenter(_vectors(), AugmentSettings(n=8, p=0.5, k=3, seed=7))
    together = a.augment(texts, [0, 1, 2], [0, 0, 0])[0]
    alone = [Augmenter(_vectors(), AugmentSettings(n=8, p=0.5, k=3, seed=7)).augment([t], [i], [0])[0][0]
             for i, t in enumerate(texts)]
    assert together == alone and together != Augmenter(_vectors(), AugmentSettings(n=8, p=0.5, k=3, seed=8)
                                                       ).augment(texts, [0, 1, 2], [0, 0, 0])[0]


def _brute_force(unit64: np.ndarray, row: int, k: int) -> list[int]:
    sims = unit64 @ unit64[row]
    order = sorted((i for i in range(len(sims)) if i != row), key=lambda i: (-sims[i], i))
    return order[:k]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), dim=st.integers(1, 8), k=st.integers(1, 70), seed=st.integers(0, 10_000),
       ties=st.booleans())
def test_glove_neighbours_equal_a_brute_force_cosine_search(n, dim, k, seed, ties):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, dim)).astype(np.float32)
    if ties:  # repeated and scaled rows: equal similarities, broken by the lower row
        matrix[n // 2:] = matrix[: n - n // 2] * 2.0
    vectors = WordVectors([f"w{i}" for i in range(n)], matrix)
    rows = np.arange(n)
    got = vectors.nearest_rows(rows, k)
    for r in rows:
        want = _brute_force(vectors.unit64, int(r), k)
        if ties:  # equal up to float64 rounding: compare similarities, then the set of clear winners
            np.testing.assert_allclose(vectors.unit64[got[r]] @ vectors.unit64[r],
                                       vectors.unit64[want] @ vectors.unit64[r], atol=1e-12)
        else:
            assert got[r].tolist() == want
    assert vectors.neighbours(["w0", "nope"], 3)["nope"] == []


def test_the_vector_file_reader(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("the 0.1 0.2\nof 0.3 -0.4\nnew york 1 2\nlast 0 0\n")
    v = WordVectors.load(path, rows=3)
    assert v.words == ["the", "of", "new york"] and v.unit.shape == (3, 2)
    gz = tmp_path / "v.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert WordVectors.load(gz).words == ["the", "of", "new york", "last"] and check_vectors_file(gz) == 2
    (tmp_path / "bad.txt").write_text("the 0.1 0.2\nof 0.3\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: 1 values, expected 2"):
        WordVectors.load(tmp_path / "bad.txt")
    (tmp_path / "nan.txt").write_text("the 0.1 0.2\nof 0.3 nan\n")
    with pytest.raises(DataError, match=r"row 2 \('of'\) holds nan or inf"):
        WordVectors.load(tmp_path / "nan.txt")
    with pytest.raises(DataError, match="word-vector file not found"):
        WordVectors.load(tmp_path / "none.txt")


def test_default_n_per_task_as_the_paper_code():
    assert [default_n(t) for t in ("sst2", "qnli", "mnli", "qqp", "rte", "reviews")] == [20, 20, 10, 10, 30, 30]


# --------------------------------------------------------------------------- the file job


def _job(tmp_path, task, name, text, **settings):
    src = tmp_path / name
    src.write_text(text)
    glove = _write_glove(tmp_path / "glove.txt", _vectors())
    return AugmentJob(src, task, glove, tmp_path / f"out-{name}", AugmentSettings(**{"n": 6, "p": 0.5, "k": 3,
                                                                                      **settings}))


SST = "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(
    ["good movie", "bad plot , dull actor", "the", "good movie", "fun story and great cast", "slow"]))


def test_the_job_keeps_originals_in_order_drops_duplicates_and_writes_a_manifest(tmp_path):
    job = _job(tmp_path, get_task("sst2"), "train.tsv", SST)
    manifest = run_job(job, progress=False, say=lambda _: None)
    src, out = read_task_file(job.input, job.task), read_task_file(job.output, job.task)
    originals = [r for r in out.records if r in src.records]
    assert originals == src.records  # in order; "good movie" is in the input twice: both kept
    texts = [tuple(out.texts(r)) for r in out.records]
    assert len(set(texts)) == len(texts) - 1  # the one repeat is the input's own
    c = manifest["counts"]
    assert c["input_rows"] == 6 and c["output_rows"] == len(out.records) == 6 + c["new_rows"]
    assert c["duplicate_rows_dropped"] > 0  # the repeated sentence's draws repeat the first's
    assert manifest["job"]["input_sha256"] and manifest["job"]["n"] == 6 and manifest["job"]["seed"] == 42
    assert json.loads(manifest_path(job.output).read_text()) == manifest
    assert not partial_dir(job.output).exists()
    # each original is followed by its own new rows, labels kept
    for record in out.records:
        assert record[1] in ("0", "1")


def test_pairs_augment_each_text_in_turn_and_other_fields_are_kept(tmp_path):
    task = Task("pairs", "a", "b", "y", ("no", "yes"), format="jsonl")
    text = "".join(json.dumps({"id": i, "a": a, "b": b, "y": "yes"}) + "\n" for i, (a, b) in enumerate(
        [("good movie", "bad plot"), ("fun story", "dull cast")]))
    job = _job(tmp_path, task, "pairs.jsonl", text)
    run_job(job, progress=False, say=lambda _: None)
    out = read_task_file(job.output, task)
    src = read_task_file(job.input, task)
    for original in src.records:
        mine = [r for r in out.records if r["id"] == original["id"]]
        assert mine[0] == original
        a_changed = [r for r in mine[1:] if r["a"] != original["a"]]
        b_changed = [r for r in mine[1:] if r["b"] != original["b"]]
        assert a_changed and b_changed and not [r for r in a_changed if r["b"] != original["b"]]
        first_b = mine.index(b_changed[0])
        assert all(r["b"] == original["b"] for r in mine[1:first_b])  # text_a's rows first, then text_b's
        assert all(set(r) == {"id", "a", "b", "y"} and r["y"] == "yes" for r in mine)
        assert len(mine) - 1 <= 2 * job.settings.n


def test_csv_output_keeps_quoting_and_columns(tmp_path):
    task = Task("reviews", "review", None, "verdict", ("bad", "good"), format="csv")
    job = _job(tmp_path, task, "r.csv", 'id,review,verdict\n7,"good movie, great cast",good\n8,"dull ""plot""",bad\n')
    run_job(job, progress=False, say=lambda _: None)
    out = read_task_file(job.output, task)
    assert out.header == ["id", "review", "verdict"] and len(out.records) > 2
    assert all(r[0] in ("7", "8") for r in out.records) and any('"plot"' in r[1] and r[1] != 'dull "plot"'
                                                                 for r in out.records)


def test_a_stopped_job_continues_from_its_chunks_to_the_same_output(tmp_path, monkeypatch):
    monkeypatch.setattr(job_module, "CHUNK_EXAMPLES", 2)
    job = _job(tmp_path, get_task("sst2"), "train.tsv", SST)
    whole = run_job(attrs_evolve(job, output=tmp_path / "whole.tsv"), progress=False, say=lambda _: None)
    calls = iter([False, True])
    with pytest.raises(AugmentStopped, match="stopped after 1 of 3 chunks"):
        run_job(job, progress=False, should_stop=lambda: next(calls), say=lambda _: None)
    assert sorted(p.name for p in partial_dir(job.output).iterdir()) == ["chunk-000000.json", "job.json"]
    said = []
    again = run_job(job, progress=False, say=said.append)
    assert "continuing: 1 of 3 chunks done before" in said[0]
    assert job.output.read_text() == (tmp_path / "whole.tsv").read_text()
    assert again["counts"] == whole["counts"]
    # up to date: not run again; another seed is another job, which does not overwrite
    said.clear()
    run_job(job, progress=False, say=said.append)
    assert "is up to date" in said[0]
    with pytest.raises(DataError, match="exists and was not made by this job.*--overwrite"):
        run_job(attrs_evolve(job, settings=AugmentSettings(n=6, p=0.5, k=3, seed=1)), progress=False)


def attrs_evolve(job, **changes):
    import attrs

    return attrs.evolve(job, **changes)


def test_the_cli_command_as_a_user_types_it(tmp_path, capsys):
    src = tmp_path / "train.tsv"
    src.write_text(SST)
    glove = _write_glove(tmp_path / "glove.txt", _vectors())
    out = tmp_path / "aug.tsv"
    argv = ["augment", str(src), "--task", "sst2", "--glove", str(glove), "--n", "4", "--p", "0.5", "--k", "3",
            "--seed", "3", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "6 rows ->" in said and "N=4, p=0.5, K=3, seed 3" in said and manifest_path(out).is_file()
    table = '{ name = "s", text_a = "sentence", labels = ["0", "1"] }'
    assert main([*argv[:2], "--task", table, *argv[4:], "--overwrite"]) == 0
    assert main([*argv[:2], "--task", "sst3", *argv[4:]]) != 0
    assert 'unknown task "sst3"' in capsys.readouterr().err
    assert main([*argv[:4], "--glove", str(tmp_path / "none.txt"), *argv[6:], "--overwrite"]) != 0
    assert "word-vector file not found" in capsys.readouterr().err
    assert main([*argv, "--p", "1.5"]) != 0
    assert "--p 1.5: a probability must be 0..1" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood\t0\nbad\t7\n")
    assert main([*argv[:1], str(bad), *argv[2:], "--overwrite"]) != 0
    assert 'bad.tsv:3: label "7" is not a sst2 label' in capsys.readouterr().err


@pytest.mark.skipif(not __import__("importlib").util.find_spec("distill_engine_torch"), reason="torch backend absent")
def test_with_a_masked_lm_single_piece_words_take_its_candidates_and_the_others_glove(tmp_path):
    from test_augment_mlm import write_mlm

    from distill_engine.augment.mlm import MaskedLM, MaskQuery

    directory, _, _ = write_mlm(tmp_path / "mlm")
    mlm = MaskedLM(directory, backend="torch")
    vectors = _vectors(extra=["goods", "moons"])
    aug = Augmenter(vectors, AugmentSettings(n=5, p=1.0, k=4), mlm)
    text = "good moons , the dog"  # good, dog: one piece each (masked LM); moons = moon ##s (GloVe)
    (cands,), counts = aug.candidates([text])
    assert [w.normalized for w, _ in cands] == ["good", "moons", "dog"]
    assert (counts.mlm_words, counts.glove_words) == (2, 1)
    pieces = mlm.tokenizer.encode_pieces([text])[0]
    queries = [MaskQuery(tuple(pieces), 0), MaskQuery(tuple(pieces), len(pieces) - 1)]
    want = mlm.candidates(queries, 4)
    assert [cands[0][1], cands[2][1]] == [c or ["good"] for c in want][:1] + [want[1] or ["dog"]]
    assert cands[1][1] == vectors.neighbours(["moons"], 4)["moons"]
