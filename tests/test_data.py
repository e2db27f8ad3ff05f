"""Tests for distill_engine.data: GLUE reading, WordPiece encoding, corpus packing, batching and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine.tasks.metrics import metric_definitions
from distill_engine.tasks.sequence import compute_metrics
from distill_engine.data import (
    TASKS,
    EncodedDataset,
    WordPieceTokenizer,
    accuracy,
    f1,
    get_task,
    iterate_batches,
    mcc,
    num_batches,
    pack_corpus,
    pearson,
    primary_metric,
    read_corpus_documents,
    read_task_examples,
    spearman,
)
from distill_engine.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SST2 = SHARED / "data" / "glue" / "SST-2"
VOCAB = SHARED / "models" / "all-MiniLM-L6-v2" / "vocab.txt"
CORPUS = SHARED / "data" / "corpus" / "wiki_sentences.txt"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared beside the checkout)")
    return path


@pytest.fixture(scope="module")
def tok() -> WordPieceTokenizer:
    return WordPieceTokenizer(_need(VOCAB))


# --------------------------------------------------------------------------- GLUE


@pytest.mark.realdata
def test_sst2_train_and_dev_counts():
    task = get_task("sst2")
    train = read_task_examples(_need(SST2 / "train.tsv"), task)
    assert len(train) == 67_349
    assert train.text_b is None
    assert train.labels.dtype == np.int32
    assert int((train.labels == 1).sum()) == 37_569
    assert train.text_a[0].startswith("hide new secretions")
    dev = read_task_examples(SST2 / "dev.tsv", task)
    assert len(dev) == 872
    assert int((dev.labels == 1).sum()) == 444


@pytest.mark.realdata
def test_sst2_test_split_is_unlabelled():
    test = read_task_examples(_need(SST2 / "test.tsv"), get_task("SST-2"))
    assert test.labels is None
    assert len(test) == 1_821
    assert test.text_a[0] == "uneasy mishmash of styles and genres ."


def test_get_task_aliases_and_properties():
    assert get_task("SST-2") is get_task("sst-2") is get_task("sst2") is TASKS["sst2"]
    assert get_task("STS-B").is_regression and get_task("stsb").num_labels == 1
    assert get_task("MNLI").labels == ("contradiction", "entailment", "neutral")
    assert get_task("mnli").num_labels == 3 and not get_task("mnli").is_regression
    assert get_task("mrpc").text_a == "#1 String" and get_task("mrpc").label == "Quality"
    for name in ("sst2", "cola", "mrpc", "qqp", "qnli", "mnli", "rte", "wnli", "stsb"):
        assert name in TASKS
        assert all(m in metric_definitions() for m in TASKS[name].metrics)


def test_unknown_task_lists_tasks_and_suggests():
    with pytest.raises(DataError) as info:
        get_task("sst3")
    msg = str(info.value)
    assert '"sst3"' in msg and 'did you mean "sst2"' in msg
    for name in TASKS:
        assert name in msg


def test_malformed_tsv_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence1\tsentence2\tlabel\na\tb\tentailment\nonly-one-column\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_task_examples(path, get_task("rte"))
    assert f"{path}:3:" in str(info.value)


def test_bad_label_names_value_and_allowed(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\ngood\t1\nbad\t7\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_task_examples(path, get_task("sst2"))
    msg = str(info.value)
    assert f"{path}:3:" in msg and '"7"' in msg and "0, 1" in msg


def test_missing_column_and_missing_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nx\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r'no column "sentence", which task sst2 expects.*the file has columns: "text", "label"'):
        read_task_examples(path, get_task("sst2"))
    with pytest.raises(DataError, match="nope.tsv"):
        read_task_examples(tmp_path / "nope.tsv", get_task("sst2"))


def test_bom_quotes_pairs_and_regression(tmp_path):
    mrpc = tmp_path / "mrpc.tsv"
    mrpc.write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe said "hi\tShe said "bye"\n'
        "0\t3\t4\tx\ty\n",
        encoding="utf-8",
    )
    ex = read_task_examples(mrpc, get_task("mrpc"))
    assert ex.text_a == ['He said "hi', "x"]
    assert ex.text_b == ['She said "bye"', "y"]
    assert ex.labels.tolist() == [1, 0]

    stsb = tmp_path / "stsb.tsv"
    stsb.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.800\n1\tc\td\t0.25\n", encoding="utf-8")
    ex = read_task_examples(stsb, get_task("sts-b"))
    assert ex.labels.dtype == np.float32
    np.testing.assert_allclose(ex.labels, [3.8, 0.25])


def test_cola_headerless_train_and_headed_test(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n", encoding="utf-8")
    ex = read_task_examples(train, get_task("CoLA"))
    assert ex.text_a == ["Our friends won't buy this.", "They drank the pub."]
    assert ex.labels.tolist() == [1, 0]
    test = tmp_path / "test.tsv"
    test.write_text("index\tsentence\n0\tBill whistled.\n", encoding="utf-8")
    ex = read_task_examples(test, get_task("cola"))
    assert ex.text_a == ["Bill whistled."] and ex.labels is None


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.realdata
def test_tokenizer_special_ids_and_pieces(tok):
    vocab = set(VOCAB.read_text(encoding="utf-8").splitlines())
    pieces = tok.tokenize("The quick brown fox jumps")
    assert pieces == ["the", "quick", "brown", "fox", "jumps"]
    assert all(p in vocab for p in pieces)
    assert all(p in vocab for p in tok.tokenize("Unbelievably, distillation works"))
    assert (tok.cls_id, tok.sep_id, tok.pad_id, tok.unk_id, tok.mask_id) == (101, 102, 0, 100, 103)
    assert tok.vocab_size == 30_522


def test_tokenizer_missing_vocab(tmp_path):
    with pytest.raises(DataError, match="missing-vocab.txt"):
        WordPieceTokenizer(tmp_path / "missing-vocab.txt")


@pytest.mark.realdata
def test_encode_single_shapes_mask_and_specials(tok):
    texts = ["a short one", "The quick brown fox jumps over the lazy dog " * 10, ""]
    enc = tok.encode(texts, None, 16, labels=[1, 0, 1])
    for arr in (enc.input_ids, enc.token_type_ids, enc.attention_mask):
        assert arr.shape == (3, 16) and arr.dtype == np.int32
    assert enc.labels.dtype == np.int32 and enc.labels.tolist() == [1, 0, 1]
    assert (enc.input_ids[:, 0] == tok.cls_id).all()
    lengths = enc.attention_mask.sum(axis=1)
    assert lengths.tolist() == [5, 16, 2]  # truncated row fills max_length exactly
    for row, n in zip(range(3), lengths):
        assert enc.input_ids[row, n - 1] == tok.sep_id
        assert (enc.input_ids[row, n:] == tok.pad_id).all()
        assert (enc.attention_mask[row, :n] == 1).all()
    assert (enc.token_type_ids == 0).all()
    # tokenize() afterwards must not inherit encode()'s truncation.
    assert len(tok.tokenize("word " * 40)) == 40


@pytest.mark.realdata
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.integers(1, 7), n=st.integers(0, 20), pairs=st.booleans())
def test_encode_in_blocks_equals_one_batch(tok, monkeypatch, block, n, pairs):
    """encode() tokenises in blocks of ENCODE_BLOCK rows to bound memory; any block size gives the
    rows one library batch gives, in order, also where the last block is short."""
    import distill_engine.data.tokenizer as tokenizer_module

    words = "the quick brown fox jumps over the lazy dog unbelievably distillation works".split()
    a = [" ".join(words[(i * 3) % 7 : (i * 3) % 7 + 1 + i % 9]) for i in range(n)]
    b = [" ".join(reversed(words[: 1 + (i * 5) % 11])) for i in range(n)] if pairs else None
    labels = [i % 2 for i in range(n)]
    # monkeypatch is per test, not per example: set both sizes each time
    monkeypatch.setattr(tokenizer_module, "ENCODE_BLOCK", 10**6)
    whole = tok.encode(a, b, 12, labels=labels)
    assert len(whole) == n
    monkeypatch.setattr(tokenizer_module, "ENCODE_BLOCK", block)
    blocks = tok.encode(a, b, 12, labels=labels)
    for name in ("input_ids", "token_type_ids", "attention_mask", "labels"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name), err_msg=name)
    # the rows are distinct enough that a block written to the wrong place would show
    assert n < 2 or len({row.tobytes() for row in whole.input_ids}) > 1


@pytest.mark.realdata
def test_encode_pairs_token_types_and_longest_first(tok):
    a = ["one two three four five six seven eight nine ten", "hi"]
    b = ["yes", "alpha beta gamma delta epsilon zeta eta theta iota kappa"]
    enc = tok.encode(a, b, 12)
    assert enc.input_ids.shape == (2, 12) and enc.labels is None
    for row in range(2):
        ids = enc.input_ids[row]
        seps = np.flatnonzero(ids == tok.sep_id)
        assert len(seps) == 2 and ids[0] == tok.cls_id
        types = enc.token_type_ids[row]
        assert (types[: seps[0] + 1] == 0).all()
        assert (types[seps[0] + 1 : seps[1] + 1] == 1).all()
    # longest_first: the long side is cut, the short side kept whole.
    first = enc.input_ids[0]
    assert first[np.flatnonzero(first == tok.sep_id)[0] + 1] == tok.token_to_id("yes")
    second = enc.input_ids[1]
    assert second[1] == tok.token_to_id("hi") and second[2] == tok.sep_id
    with pytest.raises(DataError, match="texts_b"):
        tok.encode(["x"], ["y", "z"], 8)
    with pytest.raises(DataError, match="max_length 2"):
        tok.encode(["x"], ["y"], 2)


@pytest.mark.realdata
def test_encode_ids_wraps_and_rejects_overflow(tok):
    enc = tok.encode_ids([[5, 6, 7], []], 6)
    assert enc.input_ids.tolist() == [[101, 5, 6, 7, 102, 0], [101, 102, 0, 0, 0, 0]]
    assert enc.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
    with pytest.raises(DataError, match="sequence 0"):
        tok.encode_ids([[1, 2, 3, 4, 5]], 6)


# --------------------------------------------------------------------------- corpus

WORDS = ["the", "quick", "brown", "fox", "jumps", "unbelievably", "distillation", ",", ".", "anarchism", "1539"]


def _write_corpus(path: Path, docs: list[list[str]]) -> None:
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")


def _stream_of(tok, docs):
    """Expected pieces per document, tokenised sentence by sentence (independently of the packer)."""
    return [[tok.token_to_id(p) for s in doc for p in tok.tokenize(s)] for doc in docs]


def test_read_corpus_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("  First one. \nSecond.\n\n\n\nThird doc.\n   \nFourth.", encoding="utf-8")
    assert read_corpus_documents(path) == [["First one.", "Second."], ["Third doc."], ["Fourth."]]
    with pytest.raises(DataError, match="absent.txt"):
        read_corpus_documents(tmp_path / "absent.txt")


@pytest.mark.realdata
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(
        st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join), min_size=1, max_size=6),
        min_size=1,
        max_size=5,
    ),
    max_length=st.integers(3, 24),
)
def test_pack_corpus_properties(tmp_path, tok, docs, max_length):
    path = tmp_path / "corpus.txt"
    _write_corpus(path, docs)
    read = read_corpus_documents(path)
    assert read == docs
    packed = pack_corpus(read, tok, max_length)
    assert packed.labels is None and packed.input_ids.shape[1] == max_length
    assert (packed.token_type_ids == 0).all()
    rows = []
    for ids, mask in zip(packed.input_ids, packed.attention_mask):
        n = int(mask.sum())
        assert 3 <= n <= max_length and (mask[:n] == 1).all() and (mask[n:] == 0).all()
        assert ids[0] == tok.cls_id and ids[n - 1] == tok.sep_id
        rows.append(ids[1 : n - 1].tolist())
    expected = _stream_of(tok, docs)
    # Coverage in order: the rows concatenate to all documents' pieces.
    assert [p for r in rows for p in r] == [p for d in expected for p in d]
    # No row crosses a document: every document boundary is a row boundary.
    row_ends = set(np.cumsum([len(r) for r in rows]).tolist())
    doc_ends = np.cumsum([len(d) for d in expected]).tolist()
    assert set(doc_ends) <= row_ends
    # Greedy whole sentences: a sentence that fits is never split across rows.
    offset = 0
    for doc in docs:
        for s in doc:
            k = len(tok.tokenize(s))
            if k <= max_length - 2:
                assert not any(offset < end < offset + k for end in row_ends)
            offset += k


@pytest.mark.realdata
def test_pack_real_corpus_head(tok):
    docs = read_corpus_documents(_need(CORPUS))
    assert len(docs) > 100 and docs[0][0].startswith("Anarchism is a political philosophy")
    packed = pack_corpus(docs, tok, 128, max_sequences=50)
    assert len(packed) == 50
    assert (packed.attention_mask.sum(axis=1) <= 128).all()
    # Packing fills rows: the greedy rule leaves at most one sentence's worth of room.
    assert packed.attention_mask.mean() > 0.5
    assert len(pack_corpus(docs, tok, 128, max_sequences=0)) == 0


# --------------------------------------------------------------------------- batching


def _dataset(n: int, length: int = 4, labels=True) -> EncodedDataset:
    ids = np.arange(n * length).reshape(n, length)
    return EncodedDataset(ids, np.zeros_like(ids), np.ones_like(ids), np.arange(n) if labels else None)


def test_encoded_dataset_basics():
    data = _dataset(5)
    assert len(data) == 5 and data.input_ids.dtype == np.int32 and data.labels.dtype == np.int32
    assert data.head(None) is data and data.head(9) is data
    assert data.head(2).labels.tolist() == [0, 1]
    assert data.take([4, 0]).input_ids[:, 0].tolist() == [16, 0]
    batch = data.batch(np.array([3]))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert "labels" not in _dataset(2, labels=False).batch([0])
    assert EncodedDataset(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), [0.5]).labels.dtype == np.float32
    with pytest.raises(DataError, match="token_type_ids"):
        EncodedDataset(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), batch_size=st.integers(1, 17), seed=st.integers(0, 2**31), drop_last=st.booleans())
def test_iterate_batches_covers_each_row_once(n, batch_size, seed, drop_last):
    data = _dataset(n)
    batches = list(iterate_batches(data, batch_size, shuffle=True, seed=seed, epoch=1, drop_last=drop_last))
    assert len(batches) == num_batches(n, batch_size, drop_last)
    seen = np.concatenate([b["labels"] for b in batches]) if batches else np.array([], dtype=np.int32)
    assert len(set(seen.tolist())) == len(seen)
    if drop_last:
        assert all(len(b["labels"]) == batch_size for b in batches)
        assert len(seen) == n - n % batch_size
    else:
        assert sorted(seen.tolist()) == list(range(n))
    for b in batches:
        np.testing.assert_array_equal(b["input_ids"][:, 0], b["labels"] * 4)


def test_iterate_batches_deterministic_and_epoch_dependent():
    data = _dataset(100)

    def order(seed, epoch, shuffle=True):
        return np.concatenate([b["labels"] for b in iterate_batches(data, 7, shuffle=shuffle, seed=seed, epoch=epoch)])

    np.testing.assert_array_equal(order(3, 0), order(3, 0))
    np.testing.assert_array_equal(order(3, 2), np.random.default_rng([3, 2]).permutation(100))
    assert not np.array_equal(order(3, 0), order(3, 1))
    assert not np.array_equal(order(3, 0), order(4, 0))
    np.testing.assert_array_equal(order(3, 5, shuffle=False), np.arange(100))
    assert num_batches(10, 3, False) == 4 and num_batches(10, 3, True) == 3
    with pytest.raises(DataError):
        num_batches(10, 0, False)


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    pred = np.array([1, 1, 0, 0, 1])
    gold = np.array([1, 0, 0, 1, 1])
    assert accuracy(pred, gold) == pytest.approx(0.6)
    # tp=2 fp=1 fn=1 tn=1
    assert f1(pred, gold) == pytest.approx(4 / 6)
    assert mcc(pred, gold) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert mcc(np.ones(4), np.array([0, 1, 0, 1])) == 0.0
    assert f1(np.zeros(3), np.zeros(3)) == 0.0
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0])
    # mean 2.5 / 2.75: sum dx*dy = 5.5, sum dx^2 = 5, sum dy^2 = 8.75
    assert pearson(x, y) == pytest.approx(5.5 / np.sqrt(5 * 8.75))
    # ranks 1,2,3,4 vs 1,3,2,4: 1 - 6*2/(4*15)
    assert spearman(x, y) == pytest.approx(0.8)
    with pytest.raises(DataError):
        accuracy([1, 0], [1])


def test_compute_metrics_and_primary():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.4], [1.0, 0.0]])
    gold = np.array([1, 0, 0, 0])
    out = compute_metrics(get_task("mrpc"), logits, gold)
    assert out == {"accuracy": pytest.approx(0.75), "f1": pytest.approx(2 / 3)}
    assert all(type(v) is float for v in out.values())
    reg = compute_metrics(get_task("stsb"), np.array([[1.0], [2.0], [3.5]]), np.array([0.5, 1.0, 4.0]))
    assert set(reg) == {"pearson", "spearman"} and reg["spearman"] == pytest.approx(1.0)
    assert primary_metric(get_task("cola")) == "mcc" and primary_metric(get_task("stsb")) == "pearson"
    with pytest.raises(DataError):
        compute_metrics(get_task("sst2"), np.array([0.1, 0.2]), np.array([0, 1]))


labels_st = st.lists(st.integers(0, 2), min_size=1, max_size=50)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), gold=labels_st)
def test_metric_properties(data, gold):
    pred = data.draw(st.lists(st.integers(0, 2), min_size=len(gold), max_size=len(gold)))
    acc = accuracy(pred, gold)
    assert 0.0 <= acc <= 1.0 and type(acc) is float
    assert mcc(pred, gold) == pytest.approx(mcc(gold, pred))
    assert -1.0 - 1e-9 <= mcc(pred, gold) <= 1.0 + 1e-9
    assert accuracy(gold, gold) == 1.0
    if len(set(gold)) > 1:
        assert mcc(gold, gold) == pytest.approx(1.0)
    assert 0.0 <= f1(pred, gold) <= 1.0


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(st.integers(-1000, 1000), min_size=2, max_size=40, unique=True))
def test_spearman_monotone_transform_is_one(xs):
    x = np.array(xs, dtype=np.float64)
    assert spearman(x, x**3 + 2 * x) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x / 1000)) == pytest.approx(-1.0)
    assert pearson(x, 3 * x + 1) == pytest.approx(1.0)


@given(lengths=st.lists(st.integers(1, 64), min_size=1, max_size=6), multiple=st.sampled_from([1, 8, 16]))
def test_trim_padding_keeps_every_real_token(lengths, multiple):
    from distill_engine.data import trim_padding

    mask = np.array([[1] * n + [0] * (64 - n) for n in lengths], np.int32)
    ids = np.where(mask == 1, 7, 0).astype(np.int32)
    batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask,
             "labels": np.arange(len(lengths))}
    out = trim_padding(batch, multiple)
    width = out["input_ids"].shape[1]
    assert width >= max(lengths) and (width == 64 or width % multiple == 0) and width - max(lengths) < multiple
    assert out["attention_mask"].sum() == mask.sum() and np.array_equal(out["labels"], batch["labels"])
