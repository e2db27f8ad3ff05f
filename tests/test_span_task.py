"""The built-in span task type (#29): reading SQuAD JSON and JSON Lines, the bad inputs (each one line
naming the file and the record's path), question + context windows as run_qa cuts them (every
context piece in a window; an answer's pieces hold the answer's text), the n best spans decoded per
question over its windows, exact match and F1 equal to the official SQuAD v1.1 script's, the span
losses' references and their backends, predictions in SQuAD's format, and the shipped recipes."""

from __future__ import annotations

import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.data import WordPieceTokenizer
from distill_engine.errors import DataError, FieldError
from distill_engine.tasks.registry import find_task, get_task_type
from distill_engine.tasks.span.encoding import context_windows
from distill_engine.tasks.span.losses import span_cross_entropy, span_kl_divergence, span_soft_cross_entropy
from distill_engine.tasks.span.metrics import exact_match, squad_f1
from distill_engine.tasks.span.reader import SpanExamples
from distill_engine.tasks.span.task_type import SpanTask
from distill_engine.testing.fixtures import WORDS, write_vocab

SPAN = get_task_type("span")
TASK = SpanTask("tiny", doc_stride=2, max_query_length=4)
ROOT = Path(__file__).resolve().parents[1]


# --- the official SQuAD v1.1 evaluation script's functions, verbatim: the oracle --------------------
def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def exact_match_score(prediction, ground_truth):
    return (normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)
# --- end of the official functions ------------------------------------------------------------------


CONTEXT_A = "the actor was very good and the plot was fun"
CONTEXT_B = "a film is a story"


def squad_json(contexts=((CONTEXT_A, [("q1", "who was very good", "the actor", 0), ("q2", "what was fun", "plot", 32)]),
                         (CONTEXT_B, [("q3", "what is a film", "a story", 10)]))) -> dict:
    return {"version": "1.1", "data": [{"title": "Tiny", "paragraphs": [
        {"context": c, "qas": [{"id": i, "question": q, "answers": [{"text": t, "answer_start": s}]}
                               for i, q, t, s in qas]} for c, qas in contexts]}]}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return WordPieceTokenizer(write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt"))


def _write(tmp_path: Path, content, name: str = "train.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _jsonl(records) -> str:
    return "\n".join(json.dumps(r) for r in records) + "\n"


# --- reading -----------------------------------------------------------------------------------
def test_squad_json_and_jsonl_read_into_questions_with_their_contexts_and_answers(tmp_path):
    ex = SPAN.read(_write(tmp_path, squad_json()), TASK)
    assert ex.ids == ["q1", "q2", "q3"] and ex.questions[2] == "what is a film"
    assert ex.contexts == [CONTEXT_A, CONTEXT_A, CONTEXT_B]
    assert ex.answers == [[("the actor", 0)], [("plot", 32)], [("a story", 10)]]
    assert ex.where == ["data[0].paragraphs[0].qas[0]", "data[0].paragraphs[0].qas[1]", "data[0].paragraphs[1].qas[0]"]
    assert ex.head(2).ids == ["q1", "q2"] and len(ex.head(2).answers) == 2
    jsonl = attrs.evolve(TASK, format="jsonl")
    # SQuAD's list of answers, or Hugging Face's table of lists
    path = _write(tmp_path, _jsonl([
        {"id": "a", "question": "who", "context": CONTEXT_B, "answers": [{"text": "film", "answer_start": 2}]},
        {"id": "b", "question": "what", "context": CONTEXT_B, "answers": {"text": ["story", "a story"],
                                                                          "answer_start": [12, 10]}}]), "t.jsonl")
    assert SPAN.read(path, jsonl).answers == [[("film", 2)], [("story", 12), ("a story", 10)]]
    unlabelled = SPAN.read(_write(tmp_path, _jsonl([{"id": "u", "question": "who", "context": CONTEXT_B}]), "u.jsonl"),
                           jsonl)
    assert unlabelled.labels is None


def test_a_v2_question_without_answer_reads_as_no_answer_and_is_labelled_at_cls(tmp_path, tokenizer):
    doc = squad_json()
    doc["data"][0]["paragraphs"][1]["qas"].append({"id": "q4", "question": "who is the actor", "answers": [],
                                                   "plausible_answers": [{"text": "film", "answer_start": 2}],
                                                   "is_impossible": True})
    ex = SPAN.read(_write(tmp_path, doc), TASK)
    assert ex.answers[3] == []
    data = SPAN.encode(ex, tokenizer, 16)
    assert data.labels[data.examples_of_rows == 3].tolist() == [[0, 0]] * int(np.sum(data.examples_of_rows == 3))
    # scored as no answer: 1 for "", 0 for any words
    assert exact_match(["", "film"], [[], []]) == 0.5 and squad_f1([""], [[]]) == 1.0


def _bad(doc_edit):
    doc = squad_json()
    doc_edit(doc)
    return doc


QA = lambda doc: doc["data"][0]["paragraphs"][0]["qas"][1]  # noqa: E731
BAD = [
    (lambda d: QA(d)["answers"][0].update(answer_start=31),
     r"data\[0\] \(article \"Tiny\"\): data\[0\].paragraphs\[0\].qas\[1\]: \(question q2\) answers\[0\]: the text "
     r"'plot' is not at answer_start 31 \(the context there reads ' plo'\)"),
    (lambda d: QA(d)["answers"][0].update(answer_start=400), r"qas\[1\]: \(question q2\) answers\[0\]: answer_start 400 "
                                                             r"with 4 characters falls outside the context \(44 characters\)"),
    (lambda d: QA(d)["answers"][0].update(answer_start=-1), r"answer_start -1 with 4 characters falls outside"),
    (lambda d: QA(d)["answers"][0].update(answer_start="32"), r"answer_start '32' is not a character index"),
    (lambda d: QA(d)["answers"][0].update(text=""), r"answers\[0\]: the text '' is not a non-empty string"),
    (lambda d: d["data"][0]["paragraphs"][1].pop("context"), r"data\[0\].paragraphs\[1\]: no \"context\""),
    (lambda d: d["data"][0]["paragraphs"][1].update(context="  \n"), r"data\[0\].paragraphs\[1\]: empty \"context\""),
    (lambda d: QA(d).pop("question"), r"qas\[1\]: \(question q2\) no \"question\""),
    (lambda d: QA(d).update(question=3), r"\"question\" is int 3, expected a string"),
    (lambda d: QA(d).pop("id"), r"qas\[1\]: no \"id\""),
    (lambda d: QA(d).update(id="q1"), r"data\[0\].paragraphs\[0\].qas\[1\]: question id 'q1' is also the id of "
                                      r"data\[0\].paragraphs\[0\].qas\[0\]"),
    (lambda d: QA(d).update(answers=[]), r"\(question q2\) \"answers\" is empty"),
    (lambda d: QA(d).pop("answers"), r"qas\[1\]: \(question q2\) some questions have \"answers\" and others not"),
    (lambda d: QA(d).update(answers=[{"text": "plot"}]), r"answers\[0\] is not a record"),
    (lambda d: d["data"][0]["paragraphs"][0].pop("qas"), r"paragraphs\[0\]: no list \"qas\""),
    (lambda d: d.update(data={"title": "x"}), r"expected SQuAD's JSON"),
]


@pytest.mark.parametrize("edit, message", BAD)
def test_a_bad_squad_record_is_one_line_naming_file_and_record(tmp_path, edit, message):
    path = _write(tmp_path, _bad(edit))
    with pytest.raises(DataError) as caught:
        SPAN.read(path, TASK)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert re.search(message, text), text


@pytest.mark.parametrize("text, message", [
    ("", r"t.jsonl: empty file \(no questions\)"),
    ('{"id": "a", "question": "q", "context": "c"\n', r"t.jsonl:1: not a JSON record"),
    ('\n["a"]\n', r"t.jsonl:2: expected a record"),
    ('{"id": "a", "question": "q"}\n', r"t.jsonl:1: no \"context\""),
    ('{"id": "a", "question": "q", "context": "a film", "answers": [{"text": "film", "answer_start": 1}]}\n',
     r"t.jsonl:1: \(question a\) answers\[0\]: the text 'film' is not at answer_start 1"),
    ('{"id": "a", "question": "q", "context": "a film", "answers": {"text": ["film"], "answer_start": []}}\n',
     r"t.jsonl:1: \(question a\) \"answers\" as a table needs lists"),
])
def test_a_bad_jsonl_record_is_one_line_naming_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError) as caught:
        SPAN.read(_write(tmp_path, text, "t.jsonl"), attrs.evolve(TASK, format="jsonl"))
    assert re.search(message, str(caught.value)) and "\n" not in str(caught.value), str(caught.value)


def test_not_json_names_the_line_and_a_bad_definition_names_its_field(tmp_path):
    with pytest.raises(DataError, match=r"train.json:2: not JSON"):
        SPAN.read(_write(tmp_path, '{"data":\n ]'), TASK)
    with pytest.raises(FieldError, match=r"^doc_stride: -1 is not a whole number >= 0$"):
        SpanTask("x", doc_stride=-1)
    with pytest.raises(FieldError, match=r'^format: "csv" is not one of squad, jsonl$'):
        SpanTask("x", format="csv")
    with pytest.raises(FieldError, match=r'metrics\[0\]: "accuracy" is not a metric of a span task; allowed: '
                                         r'squad_f1, exact_match'):
        SpanTask("x", metrics=("accuracy",))


# --- encoding ----------------------------------------------------------------------------------
@given(n=st.integers(0, 60), room=st.integers(1, 20), data=st.data())
def test_windows_cover_every_context_piece_and_overlap_by_the_stride(n, room, data):
    stride = data.draw(st.integers(0, room - 1))
    windows = context_windows(n, room, stride)
    covered = sorted({i for start, stop in windows for i in range(start, stop)})
    assert covered == list(range(n))
    assert windows[0][0] == 0 and windows[-1][1] == n and all(stop - start <= room for start, stop in windows)
    for (s0, e0), (s1, _) in zip(windows, windows[1:]):
        assert e0 - s1 == stride and e0 - s0 == room  # every window but the last is full
    with pytest.raises(FieldError, match="^doc_stride: "):
        context_windows(n, room, room)


words = st.lists(st.sampled_from(WORDS + ["supercalifragilistic", "café", "x1"]), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(context=words, question=st.lists(st.sampled_from(WORDS), min_size=1, max_size=8), data=st.data(),
       length=st.integers(12, 24), stride=st.integers(0, 4))
def test_rows_hold_the_question_and_windows_of_the_context_and_the_answer_pieces_read_as_the_answer(
        tokenizer, context, question, data, length, stride):
    """Every context piece is in a row; a row holding the whole answer is labelled at pieces whose
    characters are exactly the answer (an answer of whole words); another row at [CLS]; an answer
    short enough for the windows' overlap is held by one."""
    first = data.draw(st.integers(0, len(context) - 1))
    last = data.draw(st.integers(first, len(context) - 1))
    text = " ".join(context)
    start_char = len(" ".join(context[:first])) + (first > 0)
    answer = " ".join(context[first:last + 1])
    assert text[start_char:start_char + len(answer)] == answer
    task = attrs.evolve(TASK, doc_stride=stride, max_query_length=4)
    ex = SpanExamples(task, ["q"], [" ".join(question)], [text], [[(answer, start_char)]], ["line 1"])
    rows = SPAN.encode(ex, tokenizer, length)
    pieces, offsets = tokenizer.encode_offsets([text])[0]
    q = len(tokenizer.encode_pieces([" ".join(question)])[0][:4])
    seen = set()
    holds = 0
    for r in range(len(rows)):
        real = rows.attention_mask[r].astype(bool)
        ids, types, offs = rows.input_ids[r, real], rows.token_type_ids[r, real], rows.offsets[r, real]
        assert ids[0] == tokenizer.cls_id and ids[q + 1] == tokenizer.sep_id and ids[-1] == tokenizer.sep_id
        assert types.tolist() == [0] * (q + 2) + [1] * (len(ids) - q - 2)
        ctx = offs[:, 0] >= 0
        assert not ctx[:q + 2].any() and not ctx[-1] and ctx[q + 2:-1].all()
        for position in np.flatnonzero(ctx):  # each context position's id is the piece at its offsets
            k = offsets.index(tuple(offs[position]))
            assert ids[position] == pieces[k]
            seen.add(k)
        s, e = rows.labels[r]
        if (s, e) != (0, 0):
            holds += 1
            assert ctx[s] and ctx[e] and s <= e
            assert text[offs[s, 0]:offs[e, 1]] == answer
    assert seen == set(range(len(pieces)))
    # windows overlap by doc_stride pieces: an answer of at most doc_stride + 1 pieces is wholly in
    # one of them (as is any answer when the context takes one window); a longer one may straddle two
    answer_pieces = len(tokenizer.encode_pieces([answer])[0])
    assert holds >= 1 or (answer_pieces > stride + 1 and len(pieces) > length - q - 3)


def test_a_long_context_is_cut_into_windows_and_every_window_maps_back(tokenizer):
    ex = SpanExamples(TASK, ["a", "b"], ["who", "what is it"], [CONTEXT_A, CONTEXT_B],
                      [[("the actor", 0)], [("a story", 10)]], ["x", "y"])
    data = SPAN.encode(ex, tokenizer, 12)
    # CONTEXT_A: 10 pieces, rows of 12 with a question of 1 piece: room 8, stride 2, so two windows
    assert data.examples_of_rows.tolist() == [0, 0, 1]
    assert data.labels.tolist() == [[3, 4], [0, 0], [8, 9]]
    assert data.token_type_ids[0, :4].tolist() == [0, 0, 0, 1]
    batch = data.batch([0, 1])
    assert "offsets" not in batch and batch["labels"].shape == (2, 2)
    assert data.take([2]).offsets.shape == (1, 12, 2)


def test_doc_stride_too_large_for_the_rows_is_refused_before_anything_is_encoded(tokenizer):
    ex = SpanExamples(attrs.evolve(TASK, doc_stride=8), ["a"], ["who"], [CONTEXT_A], None, ["x"])
    with pytest.raises(FieldError, match=r"^doc_stride: 8 leaves no progress: a row has room for 5 context pieces"):
        SPAN.encode(ex, tokenizer, 12)


# --- decoding ----------------------------------------------------------------------------------
def _logits(data, picks):
    """Zero logits with, for each (row, start position, end position, value), that start and end raised."""
    out = np.zeros((len(data), data.max_length, 2), np.float32)
    for row, s, e, v in picks:
        out[row, s, 0] += v
        out[row, e, 1] += v
    return out


def test_the_best_span_over_windows_is_cut_from_the_context(tokenizer):
    ex = SpanExamples(TASK, ["a", "b"], ["who", "what is it"], [CONTEXT_A, CONTEXT_B],
                      [[("the actor", 0)], [("a story", 10)]], ["x", "y"])
    data = SPAN.encode(ex, tokenizer, 12)
    assert SPAN.decode(TASK, _logits(data, [(0, 3, 4, 5.0), (1, 4, 5, 7.0), (2, 8, 9, 1.0)]), data, ex) == \
        ["plot was", "a story"]  # question a: the second window's span scores higher
    # an end before its start (100), the question's pieces (80), [CLS] (60) never win
    out = _logits(data, [(0, 5, 4, 50.0), (0, 1, 1, 40.0), (0, 0, 0, 30.0), (0, 6, 6, 5.0)])
    assert SPAN.decode(TASK, out, data, ex)[0] == "was very"
    # nor a span longer than max_answer_length
    out = _logits(data, [(0, 3, 9, 45.0), (0, 7, 8, 10.0)])
    assert SPAN.decode(TASK, out, data, ex)[0] == "the actor was very good and the"
    assert SPAN.decode(attrs.evolve(TASK, max_answer_length=3), out, data, ex)[0] == "good and the"
    metrics = SPAN.evaluate(TASK, _logits(data, [(0, 3, 4, 5.0), (2, 8, 9, 1.0)]), data, ex)
    assert list(metrics) == ["squad_f1", "exact_match"] and metrics == {"squad_f1": 1.0, "exact_match": 1.0}


def test_predictions_are_written_in_squads_format(tmp_path, tokenizer):
    source = _write(tmp_path, squad_json())
    ex = SPAN.read(source, TASK)
    data = SPAN.encode(ex, tokenizer, 16)
    labels = data.labels
    out = _logits(data, [(r, s, e, 9.0) for r, (s, e) in enumerate(labels) if s])
    path = tmp_path / "predictions.json"
    assert SPAN.write_predictions(TASK, source, out, data, path) == 3
    assert json.loads(path.read_text()) == {"q1": "the actor", "q2": "plot", "q3": "a story"}
    assert SPAN.predictions_file == "test_predictions.json"


# --- metrics -----------------------------------------------------------------------------------
# letters, punctuation, whitespace and the articles, so that normalising has work to do
answers_text = st.lists(st.sampled_from(list("abe tTAhn.,!'-xé") + ["the", " an ", "An", "\t", "\u00a0"]),
                        max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(answers_text, st.lists(answers_text, min_size=1, max_size=3)), min_size=1, max_size=6))
def test_exact_match_and_f1_equal_the_official_script(pairs):
    predictions, gold = [p for p, _ in pairs], [g for _, g in pairs]
    em = sum(metric_max_over_ground_truths(exact_match_score, p, g) for p, g in pairs) / len(pairs)
    f1 = sum(metric_max_over_ground_truths(f1_score, p, g) for p, g in pairs) / len(pairs)
    assert exact_match(predictions, gold) == pytest.approx(em, abs=1e-12)
    assert squad_f1(predictions, gold) == pytest.approx(f1, abs=1e-12)


def test_hand_worked_scores():
    # "The Norman conquest." against "Norman Conquest": the article and the stop go, the case too
    assert exact_match(["The Norman conquest."], [["Norman Conquest"]]) == 1.0
    # "in 10th century france" (the article goes) against "10th century": 2 common words, precision
    # 2/4, recall 1, F1 2/3; against "France": precision 1/4, recall 1, F1 0.4; the best counts
    assert squad_f1(["in the 10th century France"], [["10th century", "France"]]) == pytest.approx(2 / 3)
    # precision 2/3, recall 1: 0.8
    assert squad_f1(["10th century France"], [["10th century"]]) == pytest.approx(0.8)
    # per question, the best gold answer; the mean over questions
    assert exact_match(["Denver Broncos", "x"], [["Broncos", "Denver Broncos"], ["y"]]) == 0.5
    assert squad_f1(["a an the"], [["the"]]) == 0.0  # no words on either side: 0 (v1.1's rule)


# --- losses ------------------------------------------------------------------------------------
def test_the_span_losses_are_start_and_end_cross_entropies_over_positions():
    rng = np.random.default_rng(0)
    z_s, z_t = rng.normal(size=(2, 5, 2)), rng.normal(size=(2, 5, 2))
    labels = np.array([[1, 3], [0, 0]])
    logp = z_s - np.log(np.exp(z_s).sum(axis=1, keepdims=True))
    expected = -(logp[0, 1, 0] + logp[0, 3, 1] + logp[1, 0, 0] + logp[1, 0, 1]) / 4
    assert span_cross_entropy((z_s,), (), None, labels, ()) == pytest.approx(expected)
    # identical logits: KL 0 and the soft cross-entropy is the teacher's entropy
    assert span_kl_divergence((z_t,), (z_t,), None, labels, (2.0,)) == pytest.approx(0.0, abs=1e-12)
    p = np.exp(z_t) / np.exp(z_t).sum(axis=1, keepdims=True)
    entropy = -(p * np.log(p)).sum(axis=1).mean()
    assert span_soft_cross_entropy((z_t,), (z_t,), None, labels, (1.0,)) == pytest.approx(entropy)
    # with a mask the padded positions are out of the softmax: their logits change nothing
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], np.float32)
    changed_s, changed_t = z_s.copy(), z_t.copy()
    changed_s[mask == 0] = 50.0
    changed_t[mask == 0] = -20.0
    for loss, params in ((span_cross_entropy, ()), (span_soft_cross_entropy, (2.0,)), (span_kl_divergence, (2.0,))):
        assert loss((changed_s,), (changed_t,), mask, labels, params) == pytest.approx(
            loss((z_s,), (z_t,), mask, labels, params)), loss.__name__
        assert loss((changed_s,), (changed_t,), None, labels, params) != pytest.approx(
            loss((z_s,), (z_t,), None, labels, params)), loss.__name__


SPAN_KINDS = ["span_cross_entropy", "span_soft_cross_entropy", "span_kl_divergence"]


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_each_backends_span_losses_equal_the_reference(backend):
    """The conformance suite's objective check on the span kinds alone (the suite itself draws a head
    per example; its per-kind gradient check covers each span kind on the span head)."""
    pytest.importorskip(f"distill_engine_{backend}")
    from distill_engine.device import Device
    from distill_engine.optim import OptimizerSpec
    from distill_engine.plugins import get_backend
    from distill_engine.testing.conformance import check_losses
    from distill_engine.testing.suite import distill_setups
    from distill_engine.backend import TrainSpec

    impl = get_backend(backend)

    @settings(max_examples=3 if backend == "mindspore" else 8, deadline=None, database=None)
    @given(setup=distill_setups(kinds=SPAN_KINDS))
    def check(setup):
        teacher, t_params, student, s_params, graph, batch = setup
        assert batch["labels"].shape == (batch["input_ids"].shape[0], 2)
        trainer = impl.trainer(impl.load_model(student, s_params, Device("cpu")),
                               impl.load_model(teacher, t_params, Device("cpu")),
                               TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
        check_losses(trainer.losses(batch), graph, student, s_params, teacher, t_params, batch)

    check()


# --- the type's checks, the registry, the recipes ----------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_the_span_type_passes_the_task_type_checks(tmp_path, backend):
    pytest.importorskip(f"distill_engine_{backend}")
    from distill_engine.testing.task_suite import check_task_type

    metrics = check_task_type("span", TASK, _write(tmp_path, squad_json()), backend,
                              write_vocab(tmp_path / "vocab.txt"), max_seq_length=12)
    assert 0.0 <= metrics["squad_f1"] <= 1.0


def test_the_tasks_command_lists_the_span_type_its_metrics_and_its_preset(capsys):
    from distill_engine.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "\nspan\n    an answer span cut from a context" in out and "head span; presets: squad" in out
    assert "\nsquad_f1\n    SQuAD's F1" in out and "\nexact_match\n    SQuAD's exact match" in out
    assert find_task("SQuAD") == SpanTask("squad")


@pytest.mark.parametrize("name, phases", [
    ("tinybert_squad.toml", ["teacher_finetune", "task_distill_intermediate", "task_distill_prediction", "evaluate",
                             "evaluate"]),
    ("budget_squad.toml", ["teacher_finetune", "task_distill_intermediate", "task_distill_prediction", "evaluate"])])
def test_the_shipped_squad_recipes_fine_tune_distil_and_evaluate(name, phases, capsys):
    from distill_engine.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / name)
    assert [p.kind for p in recipe.phases] == phases
    task = recipe.data.task if not isinstance(recipe.data.task, str) else find_task(recipe.data.task)
    assert isinstance(task, SpanTask)
    assert recipe.data.train.endswith("squad/train-from-dev.json") and recipe.data.dev.endswith("squad/eval-from-dev.json")
    if name == "tinybert_squad.toml":
        assert recipe.data.max_seq_length == 384 and task.doc_stride == 128 and task.max_query_length == 64
    td2 = recipe.phases[2]
    assert [loss.kind for loss in td2.losses] == ["span_soft_cross_entropy"] and td2.mask_padding
    if not Path(recipe.data.train).is_file():
        pytest.skip(f"{recipe.data.train} is absent")
    from distill_engine.cli import main

    assert main(["validate", str(ROOT / "recipes" / name), "--backend", "torch"]) == 0, capsys.readouterr().err

