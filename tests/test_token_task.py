"""The built-in token task type (#28): reading CoNLL and JSON Lines, the bad inputs (each one line
naming file:line), word pieces with each word's tag on its first piece, windows that cover every
word once, entity metrics equal to seqeval's and to conlleval's counting, the zoo's token F1, the
per-token losses' references, predictions written back, and the conformance checks of a task type."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.data import WordPieceTokenizer
from distill_engine.errors import DataError, RecipeError
from distill_engine.recipe import structure
from distill_engine.tasks.registry import find_task, get_task_type
from distill_engine.tasks.token.encoding import IGNORE_LABEL, first_pieces
from distill_engine.tasks.token.losses import token_cross_entropy, token_kl_divergence, token_soft_cross_entropy
from distill_engine.tasks.token.metrics import entity_details, token_f1
from distill_engine.tasks.token.reader import TokenExamples
from distill_engine.tasks.token.schemes import problem
from distill_engine.tasks.token.task_type import TokenTask
from distill_engine.testing.fixtures import WORDS, write_vocab

TOKEN = get_task_type("token")
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TASK = TokenTask("tiny", labels=TAGS)
CONLL = """-DOCSTART- -X- -X- O

the DT B-NP O
actor NN I-NP B-PER
story NN I-NP I-PER
is VBZ B-VP O

film\tNN\tB-NP\tB-LOC
-DOCSTART- -X- -X- O

a DT B-NP O
plot NN I-NP B-LOC
"""


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return WordPieceTokenizer(write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt"))


def _write(tmp_path: Path, text: str, name: str = "train.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_conll_sentences_split_on_blank_and_docstart_lines_with_tabs_or_spaces(tmp_path):
    ex = TOKEN.read(_write(tmp_path, CONLL), TASK)
    assert ex.words == [["the", "actor", "story", "is"], ["film"], ["a", "plot"]]
    assert [[TAGS[i] for i in t] for t in ex.tags] == [["O", "B-PER", "I-PER", "O"], ["B-LOC"], ["O", "B-LOC"]]
    assert ex.lines == [[3, 4, 5, 6], [8], [11, 12]]
    assert ex.head(2).words == ex.words[:2] and len(ex.head(2).tags) == 2  # run.max_examples' cut
    # another tag column: the chunk tags (IOB2 too), with their own tag set
    chunks = TokenTask("chunks", tag_column=2, labels=("O", "B-NP", "I-NP", "B-VP"))
    assert [len(t) for t in TOKEN.read(_write(tmp_path, CONLL.replace(" O\n", " O\n"), "c.txt"), chunks).tags] == [4, 1, 2]


def test_jsonl_sentences_and_unlabelled_files(tmp_path):
    task = attrs.evolve(TASK, format="jsonl")
    path = _write(tmp_path, json.dumps({"tokens": ["a", "actor"], "tags": ["O", "B-PER"]}) + "\n\n"
                  + json.dumps({"tokens": ["film"], "tags": ["B-LOC"]}) + "\n", "t.jsonl")
    ex = TOKEN.read(path, task)
    assert ex.words == [["a", "actor"], ["film"]] and ex.lines == [[1, 1], [3]]
    assert [t.tolist() for t in ex.tags] == [[0, 1], [3]]
    unlabelled = TOKEN.read(_write(tmp_path, json.dumps({"tokens": ["a"]}) + "\n", "u.jsonl"), task)
    assert unlabelled.labels is None
    assert TOKEN.read(_write(tmp_path, "the\nactor\n\nfilm\n", "u.txt"), TASK).labels is None


BAD = [
    ("conll", "the DT O\nactor NN B-ORG\n", 2, "tag 'B-ORG' is not one of task tiny's (O, B-PER, I-PER, B-LOC, I-LOC)"),
    ("conll", "the DT O\nactor B-PER\n", 2, "2 columns, and the file's first word line has 3"),
    ("conll", "the DT O\n\nis O\nactor I-PER\n", 3, "2 columns, and the file's first word line has 3"),
    ("conll", "the DT O\nactor NN I-PER\n", 2, "I-PER does not continue a chunk of type PER (IOB2 starts every chunk"),
    ("conll", "the DT O\nactor NN B-LOC\nstory NN I-PER\n", 3, "I-PER does not continue a chunk of type PER"),
    ("conll", "the DT O\nactor NN S-PER\n", 2, "tag 'S-PER' is not a IOB2 tag (O, B-<type>, I-<type>)"),
    ("jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', 1, "1 tags for 2 tokens"),
    ("jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a"], "tags": ["I-LOC"]}\n', 2,
     "I-LOC does not continue a chunk of type LOC"),
    ("jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"text": "a"}\n', 2, 'expected a record {"tokens": [...], "tags": [...]}'),
]


@pytest.mark.parametrize("fmt, text, line, message", BAD)
def test_a_bad_input_is_one_line_naming_file_and_line(tmp_path, fmt, text, line, message):
    path = _write(tmp_path, text, f"bad.{fmt}")
    with pytest.raises(DataError) as err:
        TOKEN.read(path, attrs.evolve(TASK, format=fmt))
    assert str(err.value).startswith(f"{path}:{line}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=f"^{path}: empty file \\(no sentences\\)$"):
        TOKEN.read(path, TASK)


@pytest.mark.parametrize("tags, at, message", [
    (["B-PER", "I-PER", "E-PER", "O"], None, None),
    (["B-PER", "I-PER", "O"], 1, "I-PER is not followed by I-PER or E-PER"),
    (["I-PER"], 0, "I-PER does not continue"),
    (["B-PER", "E-PER", "S-LOC", "O"], None, None),
    (["B-PER", "O"], 0, "B-PER is not followed by I-PER or E-PER"),
    (["S-PER", "E-PER"], 1, "E-PER does not continue a chunk of type PER"),
    (["B-PER", "I-PER"], 1, "I-PER ends the sentence inside a chunk"),
])
def test_bioes_closes_every_chunk(tags, at, message):
    found = problem(tags, "BIOES")
    assert (found is None) if at is None else (found[0] == at and message in found[1]), found


def test_iob1_allows_an_i_tag_to_open_a_chunk():
    assert problem(["O", "I-PER", "I-PER", "B-PER"], "IOB1") is None
    assert problem(["O", "I-PER"], "IOB2") is not None


def test_the_label_set_is_collected_from_the_training_file(tmp_path):
    task = TokenTask("tiny")  # no labels
    done = TOKEN.complete(task, _write(tmp_path, CONLL))
    assert done.labels == ("O", "B-LOC", "B-PER", "I-PER")  # O first (the zoo's label 0), then by type
    assert TOKEN.complete(TASK, None) is TASK  # a recipe's own set stays
    with pytest.raises(RecipeError, match="labels: is empty and there is no data.train"):
        TOKEN.complete(task, None)


def test_a_recipe_names_the_preset_or_writes_a_table():
    base = {"phases": [{"name": "t", "kind": "teacher_finetune"}]}
    assert find_task("CoNLL-2003").labels[:3] == ("O", "B-PER", "I-PER")
    table = {"type": "token", "name": "ner", "scheme": "BIOES", "labels": ["O", "S-PER", "B-PER", "E-PER"]}
    recipe = structure({**base, "data": {"task": table}})
    assert recipe.data.task == TokenTask("ner", scheme="BIOES", labels=("O", "S-PER", "B-PER", "E-PER"))
    for bad, message in [({"scheme": "BIO2"}, 'data.task.scheme: "BIO2" is not one of IOB1, IOB2, BIOES'),
                         ({"labels": ["O", "X-PER"]}, "data.task.labels[1]: tag 'X-PER' is not a IOB2 tag"),
                         ({"metrics": ["accuracy"]}, 'data.task.metrics[0]: "accuracy" is not a metric of a token task')]:
        with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
            structure({**base, "data": {"task": {"type": "token", "name": "ner", **bad}}})


# --- encoding ------------------------------------------------------------------------------------
# words of the tiny vocab, words it splits into several pieces ("fun.boring": fun . boring), and
# one it knows nothing of ([UNK])
POOL = list(WORDS[:12]) + ["fun.boring", "the,a,it", "zzzq", "very-not-and"]
sentences = st.lists(st.tuples(st.sampled_from(POOL), st.sampled_from(TAGS)), min_size=1, max_size=14)


def _examples(task, drawn) -> TokenExamples:
    index = {t: i for i, t in enumerate(task.labels)}
    return TokenExamples(task, [[w for w, _ in s] for s in drawn],
                         [np.array([index[t] for _, t in s], np.int32) for s in drawn], [[1] * len(s) for s in drawn])


@settings(max_examples=60, deadline=None)
@given(drawn=st.lists(sentences, min_size=1, max_size=5), length=st.integers(3, 12), all_tokens=st.booleans())
def test_each_words_first_piece_carries_its_tag_and_windows_cover_every_word_once(tokenizer, drawn, length,
                                                                                  all_tokens):
    task = attrs.evolve(TASK, label_all_tokens=all_tokens)
    examples = _examples(task, drawn)
    data = TOKEN.encode(examples, tokenizer, length)
    assert data.max_length == length and np.all(np.diff(data.examples_of_rows) >= 0)
    starts = first_pieces(data.word_ids)
    seen = [[] for _ in drawn]
    for row in range(len(data)):
        e = data.examples_of_rows[row]
        real = data.attention_mask[row] == 1
        assert data.input_ids[row, 0] == tokenizer.cls_id and data.input_ids[row, real.sum() - 1] == tokenizer.sep_id
        for i in range(length):
            w = data.word_ids[row, i]
            if w < 0:  # [CLS], [SEP], padding: never labelled
                assert data.labels[row, i] == IGNORE_LABEL
            elif starts[row, i]:
                seen[e].append(w)
                assert data.labels[row, i] == examples.tags[e][w]
                pieces = tokenizer.encode_pieces([drawn[e][w][0]])[0] or [tokenizer.unk_id]
                assert data.input_ids[row, i] == pieces[0]
            elif all_tokens:  # a later piece: the word's tag, B- as I-
                assert TAGS[data.labels[row, i]] == TAGS[examples.tags[e][w]].replace("B-", "I-")
            else:
                assert data.labels[row, i] == IGNORE_LABEL
    assert seen == [list(range(len(s))) for s in drawn]  # every word once, in order


def test_a_word_longer_than_a_row_keeps_its_first_piece(tokenizer):
    examples = _examples(TASK, [[("the", "O"), ("fun.boring.fun.boring.fun", "B-PER"), ("a", "O")]])
    data = TOKEN.encode(examples, tokenizer, 4)  # two pieces a row
    assert len(data) == 3 and data.labels[1].tolist() == [IGNORE_LABEL, 1, IGNORE_LABEL, IGNORE_LABEL]


# --- metrics -------------------------------------------------------------------------------------
def conlleval_chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """conlleval's chunks (type, first, last) of one sentence, written from its rules: a chunk ends
    before O, a B-, an S-, or a tag of another type, and after an E- or S-; it starts at a B- or S-,
    or at an I-/E- that does not continue one of its type."""
    chunks, start, kind = set(), None, None
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and (prefix in ("O", "B", "S") or t != kind):
            chunks.add((kind, start, i - 1))
            start = None
        if prefix != "O" and start is None:
            start, kind = i, t
        if prefix in ("E", "S") and start is not None:
            chunks.add((kind, start, i))
            start = None
    return chunks


ANY_TAG = st.sampled_from(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC"])


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.lists(st.tuples(ANY_TAG, ANY_TAG), min_size=1, max_size=10), min_size=1, max_size=6),
       length=st.integers(3, 9))
def test_entity_scores_through_the_task_type_equal_seqeval_and_conlleval(tokenizer, pairs, length):
    """Random (malformed too) gold and predicted tags, the predictions put on the first pieces of
    windowed rows as a model's logits would carry them: evaluate's entity scores are seqeval's
    and conlleval's count's on the words."""
    from seqeval.metrics import f1_score

    labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC")
    task = TokenTask("any", scheme="BIOES", labels=labels)  # (the reader would refuse malformed gold)
    gold = [[g for g, _ in s] for s in pairs]
    pred = [[p for _, p in s] for s in pairs]
    examples = _examples(task, [[(POOL[i % len(POOL)], g) for i, g in enumerate(s)] for s in gold])
    data = TOKEN.encode(examples, tokenizer, length)
    outputs = np.random.default_rng(0).normal(size=(len(data), length, len(labels))).astype(np.float32)
    starts = first_pieces(data.word_ids)
    for row, e in enumerate(data.examples_of_rows):
        for i in np.flatnonzero(starts[row]):
            outputs[row, i, labels.index(pred[e][data.word_ids[row, i]])] = 100.0
    metrics = TOKEN.evaluate(task, outputs, data, examples)
    assert metrics["entity_f1"] == pytest.approx(f1_score(gold, pred, zero_division=0), abs=1e-12)
    found = [conlleval_chunks(p) for p in pred]
    true = [conlleval_chunks(g) for g in gold]
    correct = sum(len(f & t) for f, t in zip(found, true))
    n_found, n_true = sum(map(len, found)), sum(map(len, true))
    precision = correct / n_found if n_found else 0.0
    recall = correct / n_true if n_true else 0.0
    assert metrics["entity_precision"] == pytest.approx(precision, abs=1e-12)
    assert metrics["entity_recall"] == pytest.approx(recall, abs=1e-12)
    for kind in ("PER", "LOC"):  # per type, as conlleval's per-type lines
        c = sum(len({x for x in f & t if x[0] == kind}) for f, t in zip(found, true))
        n = sum(len({x for x in t if x[0] == kind}) for t in true)
        if n or any(x[0] == kind for f in found for x in f):
            assert metrics[f"entity_recall/{kind}"] == pytest.approx(c / n if n else 0.0, abs=1e-12)
            assert metrics[f"entity_support/{kind}"] == n


def test_token_f1_is_the_zoos_binary_f1():
    gold = [["O", "B-PER", "I-PER", "O"], ["B-LOC"]]
    pred = [["B-LOC", "B-PER", "O", "O"], ["B-PER"]]  # the last counts as found: both are entities
    tp, fp, fn = 2, 1, 1
    assert token_f1(pred, gold) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert token_f1(gold, gold) == 1.0 and token_f1([["O"]], [["O"]]) == 0.0
    assert entity_details(pred, gold)["entity_f1/PER"] == 0.0


# --- losses --------------------------------------------------------------------------------------
def test_the_token_losses_count_only_labelled_positions():
    rng = np.random.default_rng(1)
    z_s, z_t = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    labels = np.full((2, 5), IGNORE_LABEL)
    labels[0, 1], labels[1, 3], labels[1, 4] = 2, 0, 1
    logp = z_s - np.log(np.exp(z_s).sum(-1, keepdims=True))
    expected = -(logp[0, 1, 2] + logp[1, 3, 0] + logp[1, 4, 1]) / 3
    assert token_cross_entropy((z_s,), (), None, labels, ()) == pytest.approx(expected)
    # what the ignored positions hold changes nothing
    moved = z_s.copy()
    moved[labels == IGNORE_LABEL] += 50.0
    for loss in (token_soft_cross_entropy, token_kl_divergence):
        assert loss((moved,), (z_t,), None, labels, (2.0,)) == pytest.approx(loss((z_s,), (z_t,), None, labels, (2.0,)))
    assert token_kl_divergence((z_t,), (z_t,), None, labels, (2.0,)) == pytest.approx(0.0, abs=1e-12)
    assert token_cross_entropy((z_s,), (), None, np.full((2, 5), IGNORE_LABEL), ()) == 0.0


# --- predictions -----------------------------------------------------------------------------------
def _perfect(data, examples, width):
    out = np.zeros((len(data), data.max_length, width), np.float32)
    rows, cols = np.nonzero(data.labels >= 0)
    out[rows, cols, data.labels[rows, cols]] = 1.0
    return out


def test_predictions_are_written_as_the_input_with_a_predicted_column(tmp_path, tokenizer):
    source = _write(tmp_path, CONLL)
    examples = TOKEN.read(source, TASK)
    data = TOKEN.encode(examples, tokenizer, 4)  # windows too
    out = tmp_path / "pred.txt"
    assert TOKEN.write_predictions(TASK, source, _perfect(data, examples, len(TAGS)), data, out) == 3
    lines = out.read_text().split("\n")
    assert lines[0] == "-DOCSTART- -X- -X- O O" and lines[3] == "actor NN I-NP B-PER B-PER"
    assert lines[7] == "film\tNN\tB-NP\tB-LOC B-LOC" and lines[1] == ""
    jsonl = attrs.evolve(TASK, format="jsonl")
    source = _write(tmp_path, json.dumps({"id": 7, "tokens": ["a", "actor"], "tags": ["O", "B-PER"]}) + "\n", "s.jsonl")
    examples = TOKEN.read(source, jsonl)
    data = TOKEN.encode(examples, tokenizer, 8)
    TOKEN.write_predictions(jsonl, source, _perfect(data, examples, len(TAGS)), data, out)
    assert json.loads(out.read_text().split("\n")[0]) == {"id": 7, "tokens": ["a", "actor"], "tags": ["O", "B-PER"],
                                                           "predicted_tags": ["O", "B-PER"]}


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_the_token_type_passes_the_task_type_checks(tmp_path, backend):
    pytest.importorskip(f"distill_engine_{backend}")
    from distill_engine.testing.task_suite import check_task_type

    long = CONLL + "\n" + "\n".join(f"{w} NN B-NP {'B-PER' if i == 0 else 'I-PER'}" for i, w in enumerate(WORDS[:20])) + "\n"
    metrics = check_task_type("token", TASK, _write(tmp_path, long), backend, write_vocab(tmp_path / "vocab.txt"),
                              max_seq_length=8)
    assert 0.0 <= metrics["entity_f1"] <= 1.0


def test_the_shipped_conll2003_recipe_fine_tunes_distils_and_evaluates_on_valid_and_test():
    from distill_engine.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "tinybert_conll2003.toml")
    assert recipe.data.task == "conll2003" and find_task(recipe.data.task).scheme == "IOB2"
    assert [p.kind for p in recipe.phases] == ["teacher_finetune", "task_distill_intermediate",
                                                "task_distill_prediction", "evaluate", "evaluate"]
    assert [p.target for p in recipe.phases[3:]] == ["teacher", "student"]
    assert recipe.data.dev.endswith("conll2003/valid.txt") and recipe.data.test.endswith("conll2003/test.txt")
    assert [loss.kind for loss in recipe.phases[2].losses] == ["token_soft_cross_entropy"]


def test_the_tasks_command_lists_the_token_type_its_metrics_and_its_preset(capsys):
    from distill_engine.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "\ntoken\n    a tag per word" in out and "head token; presets: conll2003; from plugin builtin-tasks" in out
    assert "\nentity_f1\n    entity-level F1" in out and "\ntoken_f1\n    the MindSpore BERT zoo's F1" in out
    assert "\nconll2003\n    type token; format conll; scheme IOB2; labels O, B-PER, I-PER" in out


def test_per_position_labels_and_word_ids_follow_the_rows_when_a_batch_is_cut(tokenizer):
    from distill_engine.data import trim_padding

    examples = _examples(TASK, [[("the", "O"), ("actor", "B-PER")], [("a", "O")]])
    data = TOKEN.encode(examples, tokenizer, 24)
    batch = trim_padding(data.batch([0, 1]), multiple=8)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 8)
    assert batch["labels"][0, :4].tolist() == [IGNORE_LABEL, 0, 1, IGNORE_LABEL]
    assert "word_ids" not in batch  # the models never read it
    taken = data.take([1, 0])
    assert taken.word_ids[0, :3].tolist() == [-1, 0, -1] and taken.examples_of_rows.tolist() == [1, 0]
    # a class per row is not cut, nor [B, 2] spans
    rows = {**data.batch([0, 1]), "labels": np.array([1, 0])}
    assert trim_padding(rows, 8)["labels"].tolist() == [1, 0]


def test_augmenting_a_token_task_is_refused_in_one_line(tmp_path):
    from distill_engine.augment.recipe import job_of

    recipe = structure({"data": {"task": "conll2003", "train": str(_write(tmp_path, CONLL))},
                        "augment": {"glove": str(tmp_path / "glove.txt")},
                        "phases": [{"name": "td2", "kind": "task_distill_prediction", "data": "train_aug"}]})
    with pytest.raises(RecipeError, match=r'augmentation rewrites tasks of type sequence, and task conll2003 is of '
                                          r'type token \(its augmentation is not built yet\)$'):
        job_of(recipe, find_task("conll2003"), "torch")
