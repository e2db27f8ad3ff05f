"""Task definitions and task files: presets, recipe tables, TSV/CSV/JSONL readers and writers,
the errors a user meets (missing column, label outside the set), and pair tokenisation."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.cli import main
from distill_engine.data import (TASKS, Task, WordPieceTokenizer, get_task, read_task_examples, read_task_file,
                                 write_task_file)
from distill_engine.tasks.metrics import metrics_for
from distill_engine.data.tasks import CLASSIFICATION_METRICS, REGRESSION_METRICS
from distill_engine.errors import DataError, RecipeError
from distill_engine.recipe import structure
from distill_engine.testing.fixtures import write_vocab

REVIEWS = Task("reviews", "review", "summary", "verdict", ("bad", "good"), ("accuracy", "f1"), format="csv")


def test_the_metrics_a_task_may_name_are_the_ones_registered():
    # the built-in names a Task checks without the registry are the registered built-ins
    assert set(CLASSIFICATION_METRICS) == set(metrics_for("classification"))
    assert set(REGRESSION_METRICS) == set(metrics_for("regression"))


def test_the_nine_glue_tasks_are_presets_listed_by_the_tasks_command(capsys):
    assert sorted(TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name, task in TASKS.items():
        assert f"\n{name}\n" in out
        assert ", ".join(task.metrics) in out
    assert '"#1 String"' in out and "contradiction, entailment, neutral" in out and "regression" in out


def test_a_recipe_defines_a_task_inline_or_as_a_table():
    base = {"phases": [{"name": "t", "kind": "teacher_finetune"}]}
    table = {"name": "reviews", "format": "csv", "text_a": "review", "text_b": "summary", "label": "verdict",
             "labels": ["bad", "good"], "metrics": ["accuracy", "f1"]}
    recipe = structure({**base, "data": {"task": table}})
    assert recipe.data.task == REVIEWS
    assert structure({**base, "data": {"task": "SST-2"}}).data.task == "SST-2"
    regression = structure({**base, "data": {"task": {"name": "score", "text_a": 0, "label": 1, "header": False}}})
    assert regression.data.task.is_regression and regression.data.task.metrics == ("pearson", "spearman")


@pytest.mark.parametrize("table, message", [
    ({"name": "r", "text_a": "a", "labels": ["x"]}, r"data\.task\.labels: \['x'\] has one class"),
    ({"name": "r", "text_a": "a", "labels": ["x", "x"]}, r"data\.task\.labels\[1\]: \"x\" appears twice"),
    ({"name": "r", "text_a": "a", "labels": ["a", "b"], "metrics": ["pearson"]},
     r"metrics\[0\]: \"pearson\" is not a metric of a classification task"),
    ({"name": "r", "text_a": "a", "labels": ["a", "b", "c"], "metrics": ["f1"]}, r"\"f1\" is binary F1"),
    ({"name": "r", "text_a": "a", "format": "xlsx"}, r"data\.task\.format: \"xlsx\" is not one of tsv, csv, jsonl"),
    ({"name": "r", "text_a": "a", "label": "a"}, r"data\.task\.label: \"a\" is also text_a"),
    ({"name": "r", "text_a": "a", "header": False}, r"data\.task\.text_a: \"a\" is a column name, but header = false"),
    ({"name": "r", "text_a": -1}, r"data\.task\.text_a: -1 is not a column index"),
    ({"name": "r"}, r"data\.task\.text_a: required key is missing"),
    ({"name": "a b", "text_a": "x"}, r"data\.task\.name: \"a b\" is not a valid task name"),
])
def test_a_bad_task_table_is_one_error_naming_the_field(table, message):
    with pytest.raises(RecipeError, match=message):
        structure({"phases": [{"name": "t", "kind": "teacher_finetune"}], "data": {"task": table}})


def test_an_unknown_preset_says_how_to_define_a_task():
    with pytest.raises(DataError, match=r'unknown task "sst3".*did you mean "sst2".*data\.task = \{ name'):
        get_task("sst3")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_quoted_fields_commas_and_line_breaks(tmp_path):
    path = _write(tmp_path / "r.csv", 'review,summary,verdict,id\n"Great, truly","short",good,1\n'
                                      '"He said ""no""\nand left",x,bad,2\n\nplain,y,good,3\n')
    table = read_task_file(path, REVIEWS)
    assert table.header == ["review", "summary", "verdict", "id"] and table.lines == [2, 3, 6]
    ex = table.examples()
    assert ex.text_a == ["Great, truly", 'He said "no"\nand left', "plain"] and ex.text_b == ["short", "x", "y"]
    assert ex.labels.tolist() == [1, 0, 1]


def test_a_missing_column_names_the_expected_and_the_present_columns(tmp_path):
    path = _write(tmp_path / "r.csv", "text,summary,verdict\nx,y,good\n")
    with pytest.raises(DataError, match=r'r\.csv: no column "review", which task reviews expects \(text_a "review", '
                                        r'text_b "summary", label "verdict"\); the file has columns: "text", '
                                        r'"summary", "verdict"'):
        read_task_file(path, REVIEWS)


def test_a_label_outside_the_set_names_file_line_and_value(tmp_path):
    path = _write(tmp_path / "r.csv", 'review,summary,verdict\n"a\nb",y,good\nx,y,meh\n')
    with pytest.raises(DataError, match=r'r\.csv:4: label "meh" is not a reviews label; allowed: bad, good'):
        read_task_examples(path, REVIEWS)


def test_header_less_files_read_columns_by_index(tmp_path):
    task = Task("plain", 1, None, 0, ("neg", "pos"), format="tsv", header=False)
    path = _write(tmp_path / "p.tsv", 'pos\tit "works"\nneg\tno\n')
    ex = read_task_examples(path, task)
    assert ex.text_a == ['it "works"', "no"] and ex.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match=r"p2\.tsv:2: row has 1 columns, expected at least 2"):
        read_task_examples(_write(tmp_path / "p2.tsv", "pos\tok\nneg\n"), task)
    csv_task = Task("plain", 1, None, 0, ("neg", "pos"), format="csv", header=False)
    assert read_task_examples(_write(tmp_path / "p.csv", 'pos,"a, b"\n'), csv_task).text_a == ["a, b"]


def test_jsonl_objects_arrays_and_regression(tmp_path):
    task = Task("sts", "s1", "s2", "score", format="jsonl")
    path = _write(tmp_path / "s.jsonl", '{"s1": "a", "s2": "b", "score": 4.5}\n\n{"s1": "c", "s2": "d", "score": "1"}\n')
    ex = read_task_examples(path, task)
    assert ex.text_b == ["b", "d"] and ex.labels.dtype == np.float32 and ex.labels.tolist() == [4.5, 1.0]
    arrays = Task("arr", 0, None, 1, ("0", "1"), format="jsonl", header=False)
    ex = read_task_examples(_write(tmp_path / "a.jsonl", '["x", 1]\n["y", 0]\n'), arrays)
    assert ex.labels.tolist() == [1, 0]  # JSON numbers are the labels "1" and "0"
    unlabelled = read_task_examples(_write(tmp_path / "t.jsonl", '{"s1": "a", "s2": "b"}\n'), task)
    assert unlabelled.labels is None
    with pytest.raises(DataError, match=r's2\.jsonl:2: no key "s2", which task sts expects .* keys: "s1", "score"'):
        read_task_examples(_write(tmp_path / "s2.jsonl", '{"s1": "a", "s2": "b", "score": 1}\n{"s1": "a", "score": 1}\n'),
                           task)
    with pytest.raises(DataError, match=r's3\.jsonl:1: label "high" is not a finite number'):
        read_task_examples(_write(tmp_path / "s3.jsonl", '{"s1": "a", "s2": "b", "score": "high"}\n'), task)
    with pytest.raises(DataError, match=r"s4\.jsonl:1: not valid JSON"):
        read_task_examples(_write(tmp_path / "s4.jsonl", '{"s1": "a",\n'), task)
    with pytest.raises(DataError, match=r"s5\.jsonl:2: record lacks the label \"score\""):
        read_task_examples(_write(tmp_path / "s5.jsonl", '{"s1": "a", "s2": "b", "score": 1}\n{"s1": "a", "s2": "b"}\n'),
                           task)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(_TEXT, _TEXT, st.sampled_from(["bad", "good"])), min_size=1, max_size=6),
       fmt=st.sampled_from(["csv", "jsonl", "tsv"]))
def test_written_files_read_back_as_written(tmp_path_factory, rows, fmt):
    """write_task_file(read_task_file(f).records) is f's content again, in every format (TSV only
    for texts without tabs and line breaks, which TSV cannot hold)."""
    if fmt == "tsv":
        rows = [(a, b, y) for a, b, y in rows if not set("\t\r\n") & set(a + b)]
        rows = [(a, b, y) for a, b, y in rows if (a + b).strip()]  # a blank TSV line is skipped
    if not rows:
        return
    task = Task("reviews", "review", "summary", "verdict", ("bad", "good"), format=fmt)
    path = tmp_path_factory.mktemp("rt") / f"f.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"review": a, "summary": b, "verdict": y}) + "\n" for a, b, y in rows),
                        encoding="utf-8")
    elif fmt == "csv":
        buf = io.StringIO()
        # RFC 4180 line ends: the writer then quotes a field holding a bare "\r" (with "\n" as the
        # terminator it would not, and the file would hold a line break where the row had a character)
        csv.writer(buf, lineterminator="\r\n").writerows([("review", "summary", "verdict"), *rows])
        path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    else:
        path.write_text("review\tsummary\tverdict\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows),
                        encoding="utf-8", newline="")
    table = read_task_file(path, task)
    if fmt == "csv":  # csv drops rows of nothing but empty fields ... and so do we
        rows = [r for r in rows if any(f.strip() for f in r)]
    assert [tuple(table.texts(r)) for r in table.records] == [(a, b) for a, b, _ in rows]
    out = path.with_name("out." + fmt)
    write_task_file(out, table, table.records)
    again = read_task_file(out, task)
    assert again.records == table.records and again.header == table.header


def test_pairs_are_truncated_longer_text_first_with_segment_ids(tmp_path):
    tok = WordPieceTokenizer(write_vocab(tmp_path / "vocab.txt"))
    enc = tok.encode(["good great fine nice bad awful"], ["movie film"], max_length=8)
    ids = enc.input_ids[0].tolist()
    # [CLS] + 3 of a's 6 words + [SEP] + both of b's 2 + [SEP]: the longer text lost the tokens
    assert ids[0] == tok.cls_id and ids[4] == tok.sep_id and ids[7] == tok.sep_id
    assert tok.tokenize("good great fine") == [tok._tok.id_to_token(i) for i in ids[1:4]]
    assert enc.token_type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("preset", ["sst2", "stsb"])
def test_the_sequence_type_passes_the_task_type_checks(preset, tmp_path):
    from distill_engine.testing.fixtures import write_sst2_like
    from distill_engine.testing.task_suite import check_task_type

    train, _ = write_sst2_like(tmp_path, n_train=20, n_dev=4)
    if preset == "stsb":  # a regression file of the same sentences
        rows = [line.split("\t") for line in train.read_text().splitlines()[1:]]
        train.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{t}\t{t}\t{float(y) * 5:.1f}\n" for t, y in rows))
    metrics = check_task_type("sequence", get_task(preset), train, "numpy", write_vocab(tmp_path / "vocab.txt"))
    assert list(metrics) == list(get_task(preset).metrics)


def test_a_tsv_file_read_by_a_csv_task_says_what_the_task_reads_and_what_the_file_looks_like(tmp_path):
    """MRPC's dev.tsv given to a CSV task's model said only "not valid CSV (',' expected after '"')"."""
    path = _write(tmp_path / "dev.tsv", 'review\tsummary\tverdict\nplain\ty\tgood\n"Quoted" start\tx\tbad\n')
    with pytest.raises(DataError) as exc:
        read_task_file(path, REVIEWS)
    assert str(exc.value) == (
        f"{path}:3: not valid CSV (',' expected after '\"'); task reviews reads CSV (comma-separated, fields "
        'quoted with "); the file looks like TSV (tab-separated, no quoting): read it with a task of format '
        '"tsv", or convert it')


def test_a_csv_file_read_by_a_tsv_task_says_so(tmp_path):
    path = _write(tmp_path / "dev.csv", "sentence,label\nfine film,1\n")
    with pytest.raises(DataError, match=r'no column "sentence".*; task sst2 reads TSV \(tab-separated, no quoting\); '
                                        r"the file looks like CSV .*: read it with a task of format \"csv\""):
        read_task_file(path, get_task("sst2"))


def test_a_bad_csv_file_that_looks_like_csv_gets_no_format_hint(tmp_path):
    path = _write(tmp_path / "r.csv", 'review,summary,verdict\n"open quote,x,good\n')
    with pytest.raises(DataError) as exc:
        read_task_file(path, REVIEWS)
    assert "not valid CSV" in str(exc.value) and "task reviews reads CSV" in str(exc.value)
    assert "looks like" not in str(exc.value)
