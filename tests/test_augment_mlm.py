"""Masked-LM candidates (distill_engine.augment.mlm) against TinyBERT's per-word loop, in numpy.

The oracle runs the numpy reference forward on one unpadded pair input per query, exactly as the
original `data_augmentation.py` loop does, and applies the masked-LM head written out here in
float64. The engine's batched, length-sorted, padded version must give the same logits (float32
tolerance) and the same candidates.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import backend_installed, shared_path
from safetensors.numpy import load_file, save_file
from scipy.special import erf

from distill_engine import reference
from distill_engine.augment.mlm import MaskedLM, MaskQuery, top_k
from distill_engine.bert import BertConfig, init_parameters
from distill_engine.errors import CheckpointError, DataError

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("good great fine nice bad awful poor dull movie film plot actor the a is was very not and but it this "
         "that story fun boring long short old new big small red blue cat dog sun moon tree house").split()
SUFFIXES = ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##y", "##al", "##ish", "##ful", "##less", "##ness",
            "##ment", "##ion", "##ize"]
VOCAB = SPECIAL + WORDS + SUFFIXES
PAD, UNK, CLS, SEP, MASK = range(5)
CONFIG = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=64, initializer_range=0.3)
K = 8


needs_torch = pytest.mark.skipif(not backend_installed("torch"), reason="backend torch not installed")
needs_mindspore = pytest.mark.skipif(not backend_installed("mindspore"), reason="backend mindspore not installed")


def _head(seed: int, explicit_decoder: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, v = CONFIG.hidden_size, CONFIG.vocab_size
    head = {"dense.weight": rng.standard_normal((h, h)) * 0.4, "dense.bias": rng.standard_normal(h) * 0.1,
            "norm.weight": 1 + 0.3 * rng.standard_normal(h), "norm.bias": 0.2 * rng.standard_normal(h),
            "bias": 0.5 * rng.standard_normal(v)}
    if explicit_decoder:
        head["decoder"] = rng.standard_normal((v, h)) * 0.5
    return {k: x.astype(np.float32) for k, x in head.items()}


def write_mlm(directory, *, seed=0, explicit_decoder=False, old_names=False, pooler=False, head=True,
              edit=None):
    """A tiny BertForMaskedLM directory; returns (directory, canonical params, head with its decoder)."""
    directory.mkdir(parents=True, exist_ok=True)
    hf = CONFIG.to_hf_config() | {"architectures": ["BertForMaskedLM"]}
    (directory / "config.json").write_text(json.dumps(hf))
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    params = init_parameters(CONFIG, seed)
    if not pooler:  # BertForMaskedLM has no pooler
        params = {k: v for k, v in params.items() if not k.startswith("pooler.")}
    tensors = {"bert." + k: v for k, v in params.items()}
    parts = _head(seed + 100, explicit_decoder)
    if head:
        ln = ("gamma", "beta") if old_names else ("weight", "bias")
        tensors |= {"cls.predictions.transform.dense.weight": parts["dense.weight"],
                    "cls.predictions.transform.dense.bias": parts["dense.bias"],
                    f"cls.predictions.transform.LayerNorm.{ln[0]}": parts["norm.weight"],
                    f"cls.predictions.transform.LayerNorm.{ln[1]}": parts["norm.bias"],
                    "cls.predictions.bias": parts["bias"]}
        if explicit_decoder:
            tensors["cls.predictions.decoder.weight"] = parts["decoder"]
    if edit is not None:
        edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"))
    parts.setdefault("decoder", params["embeddings.word_embeddings.weight"])
    return directory, params, parts


# --- the oracle: TinyBERT's loop, one forward per word ----------------------------------------------
def oracle_logits(params, head, pieces, j, config=CONFIG):
    """Logits at the mask of the original's input for one word (float64), or None when the first
    copy does not fit."""
    n, limit = len(pieces), config.max_position_embeddings
    if n + 2 > limit:
        return None
    masked = list(pieces)
    masked[j] = MASK
    tokens = ([CLS] + masked + [SEP] + list(pieces) + [SEP])[:limit]
    segments = ([0] * (n + 2) + [1] * (n + 1))[:limit]
    batch = {"input_ids": np.array([tokens], np.int32), "token_type_ids": np.array([segments], np.int32),
             "attention_mask": np.ones((1, len(tokens)), np.int32)}
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    if "pooler.dense.weight" not in p:
        p |= {"pooler.dense.weight": np.zeros((16, 16)), "pooler.dense.bias": np.zeros(16)}
    h = reference.forward(config, p, batch).hidden_states[-1][0, j + 1]
    g = {k: np.asarray(v, np.float64) for k, v in head.items()}
    t = h @ g["dense.weight"].T + g["dense.bias"]
    t = 0.5 * t * (1 + erf(t / np.sqrt(2)))
    t = (t - t.mean()) / np.sqrt(t.var() + config.layer_norm_eps) * g["norm.weight"] + g["norm.bias"]
    return t @ g["decoder"].T + g["bias"]


def oracle_candidates(logits, k=K):
    if logits is None:
        return []
    top = np.argsort(-logits, kind="stable")[:k]
    gaps = np.diff(np.sort(logits)[::-1][: k + 1])
    assert np.all(np.abs(gaps) > 1e-4), "near-tie in the oracle's top k: pick another seed"
    return [VOCAB[i] for i in top if not VOCAB[i].startswith("##") and VOCAB[i] not in SPECIAL]


def _queries(seed=0, lengths=(3, 12, 5, 9, 4, 7, 12, 6, 3, 10)):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        pieces = rng.integers(len(SPECIAL), len(SPECIAL) + len(WORDS), n)
        out.append(MaskQuery(pieces, int(rng.integers(n))))
    return out


def assert_logits_close(got, want, what):
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= 1e-4 * scale, f"{what}: max |error| {err:.3g} over logit scale {scale:.3g}"


class Recording:
    """Notes the shape of every batch a model runs."""

    def __init__(self, model):
        self.model, self.shapes = model, []

    def forward(self, batch):
        self.shapes.append(batch["input_ids"].shape)
        return self.model.forward(batch)


# --- tests ------------------------------------------------------------------------------------------
@needs_torch
def test_batched_logits_and_candidates_match_the_per_word_loop_on_torch(tmp_path):
    path, params, head = write_mlm(tmp_path / "mlm")
    mlm = MaskedLM(path, backend="torch", batch_size=4)
    mlm.model = rec = Recording(mlm.model)
    queries = _queries()
    logits = mlm.logits(queries)
    assert logits.shape == (len(queries), CONFIG.vocab_size) and logits.dtype == np.float32
    oracle = [oracle_logits(params, head, q.piece_ids, q.position) for q in queries]
    for i, (got, want) in enumerate(zip(logits, oracle)):
        assert_logits_close(got, want, f"query {i}")
    # sorted by length, batches of 4, each padded to a multiple of 16: 9..27 tokens -> 16 and 32
    assert [rows for rows, _ in rec.shapes] == [4, 4, 2]
    assert all(length % 16 == 0 for _, length in rec.shapes) and {l for _, l in rec.shapes} == {16, 32}
    assert mlm.candidates(queries, K) == [oracle_candidates(o) for o in oracle]


@needs_mindspore
def test_batched_logits_match_the_per_word_loop_on_mindspore(tmp_path):
    path, params, head = write_mlm(tmp_path / "mlm")
    queries = _queries(1, lengths=(3, 6, 4, 5))  # one batch of one shape (16 tokens): one compile
    mlm = MaskedLM(path, backend="mindspore")
    oracle = [oracle_logits(params, head, q.piece_ids, q.position) for q in queries]
    for i, (got, want) in enumerate(zip(mlm.logits(queries), oracle)):
        assert_logits_close(got, want, f"query {i}")
    assert mlm.candidates(queries, K) == [oracle_candidates(o) for o in oracle]


@pytest.mark.parametrize("explicit_decoder, old_names, pooler", [(True, False, False), (False, True, True)],
                         ids=["explicit-decoder", "tied-gamma-beta-pooler"])
def test_decoder_tied_or_explicit_and_old_layernorm_names(tmp_path, explicit_decoder, old_names, pooler):
    path, params, head = write_mlm(tmp_path / "mlm", seed=3, explicit_decoder=explicit_decoder,
                                   old_names=old_names, pooler=pooler)
    mlm = MaskedLM(path, backend="numpy")  # the head is the subject here; any backend will do
    want = params["embeddings.word_embeddings.weight"] if not explicit_decoder else head["decoder"]
    assert np.array_equal(mlm.head.decoder, want)
    queries = _queries(2, lengths=(4, 7))
    for got, q in zip(mlm.logits(queries), queries):
        assert_logits_close(got, oracle_logits(params, head, q.piece_ids, q.position), "logits")


def test_candidates_drop_wordpiece_continuations_and_special_tokens_and_break_ties_by_id(tmp_path):
    def boost(tensors):  # [SEP] and "##s" on top, then "good" and "bad" tied exactly
        tensors["cls.predictions.bias"][[SEP, VOCAB.index("##s")]] = [60.0, 50.0]
        tensors["cls.predictions.bias"][[VOCAB.index("good"), VOCAB.index("bad")]] = 40.0
        tensors["cls.predictions.transform.dense.weight"][:] = 0.0  # every position: the same logits
        tensors["cls.predictions.transform.dense.bias"][:] = 0.0

    path, _, _ = write_mlm(tmp_path / "mlm", edit=boost)
    mlm = MaskedLM(path, backend="numpy")
    assert mlm.vocab_tokens == VOCAB
    assert mlm.candidates(_queries(lengths=(5,)), 4) == [["good", "bad"]]  # 4 taken, 2 of them dropped
    assert list(top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2)) == [1, 2]


@needs_torch
def test_truncation_cuts_the_unmasked_copy_and_a_first_copy_that_does_not_fit_has_no_candidates(tmp_path):
    path, params, head = write_mlm(tmp_path / "mlm")
    mlm = MaskedLM(path, backend="torch")
    rng = np.random.default_rng(5)
    long_ = MaskQuery(rng.integers(5, 45, 40), 38)  # 83 tokens -> 64: the unmasked copy is cut
    exact = MaskQuery(rng.integers(5, 45, 62), 61)  # the first copy fills the 64 positions
    too_long = MaskQuery(rng.integers(5, 45, 63), 2)  # [CLS] + 63 + [SEP] = 65 > 64
    queries = [long_, too_long, _queries(lengths=(4,))[0], exact]
    logits = mlm.logits(queries)
    assert np.isnan(logits[1]).all()
    for i in (0, 2, 3):
        q = queries[i]
        assert_logits_close(logits[i], oracle_logits(params, head, q.piece_ids, q.position), f"query {i}")
    got = mlm.candidates(queries, K)
    assert got[1] == [] and got[0] and got[3]
    assert got == [oracle_candidates(oracle_logits(params, head, q.piece_ids, q.position)) for q in queries]


def test_a_checkpoint_without_a_masked_lm_head_is_one_error_naming_it(tmp_path):
    path, _, _ = write_mlm(tmp_path / "nohead", head=False)
    with pytest.raises(CheckpointError, match=r"nohead.*no masked-LM head.*cls\.predictions\.transform\.dense\.weight"):
        MaskedLM(path, backend="numpy")
    path, _, _ = write_mlm(tmp_path / "half", edit=lambda t: t.pop("cls.predictions.bias"))
    with pytest.raises(CheckpointError, match=r"incomplete: missing cls\.predictions\.bias"):
        MaskedLM(path, backend="numpy")
    path, _, _ = write_mlm(tmp_path / "shape", edit=lambda t: t.update(
        {"cls.predictions.decoder.weight": np.zeros((CONFIG.vocab_size, 8), np.float32)}))
    with pytest.raises(CheckpointError, match=r"wrong shape.*cls\.predictions\.decoder\.weight \(60, 8\) "
                                              r"\(expected \(60, 16\)\)"):
        MaskedLM(path, backend="numpy")


def test_bad_queries_are_data_errors(tmp_path):
    path, _, _ = write_mlm(tmp_path / "mlm")
    mlm = MaskedLM(path, backend="numpy")
    with pytest.raises(DataError, match="outside the sentence"):
        MaskQuery((7, 8), 2)
    with pytest.raises(DataError, match="piece id 60 is outside the vocabulary"):
        mlm.logits([MaskQuery((7, 60), 0)])
    assert mlm.logits([]).shape == (0, CONFIG.vocab_size) and mlm.candidates([], 3) == []


@pytest.mark.realdata
def test_sentence_embedding_minilm_has_no_masked_lm_head():
    path = shared_path("models", "all-MiniLM-L6-v2")
    with pytest.raises(CheckpointError, match="all-MiniLM-L6-v2.*no masked-LM head"):
        MaskedLM(path, backend="numpy")


@needs_mindspore
@pytest.mark.parametrize("head_prefix", ["bert.", ""])
def test_mindspore_zoo_pretraining_checkpoint_head_cls1(tmp_path, head_prefix):
    from distill_engine_mindspore.checkpoint import write_ckpt
    from distill_engine_mindspore.zoo_names import zoo_name

    params = init_parameters(CONFIG, 4)  # BertPreTraining: the pooler is there
    head = _head(7, explicit_decoder=False)
    tensors = {zoo_name(k, "bert.bert.bert_"): v for k, v in params.items()}
    c = head_prefix + "cls1."
    tensors |= {c + "dense.weight": head["dense.weight"], c + "dense.bias": head["dense.bias"],
                c + "layernorm.gamma": head["norm.weight"], c + "layernorm.beta": head["norm.bias"],
                c + "output_bias": head["bias"], head_prefix + "cls2.dense.weight": np.zeros((2, 16), np.float32),
                "global_step": np.array([10], np.int32)}
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(CONFIG.to_hf_config()))
    ckpt = write_ckpt(tmp_path / "ckpt" / "bert_pretrain.ckpt", tensors)
    with pytest.raises(CheckpointError, match="no vocab.txt"):
        MaskedLM(ckpt, fmt="mindspore", backend="numpy")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    # load_any (the plugin's zoo_names) accounts for {H}cls1.* as the masked-LM head and drops it
    mlm = MaskedLM(ckpt, fmt="mindspore", backend="numpy", vocab=vocab)
    head["decoder"] = params["embeddings.word_embeddings.weight"]
    queries = _queries(3, lengths=(5, 8))
    for got, q in zip(mlm.logits(queries), queries):
        assert_logits_close(got, oracle_logits(params, head, q.piece_ids, q.position), "zoo logits")
    del tensors[c + "output_bias"]
    write_ckpt(ckpt, tensors)
    with pytest.raises(CheckpointError, match=f"bert_pretrain.ckpt: the masked-LM head is incomplete: "
                                              f"missing {c}output_bias"):
        MaskedLM(ckpt, fmt="mindspore", backend="numpy", vocab=vocab)


@needs_torch
def test_a_pytorch_model_bin_directory_reads_its_head_through_the_plugin_reader(tmp_path, capsys):
    import torch

    path, params, head = write_mlm(tmp_path / "mlm", seed=5)
    tensors = load_file(str(path / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, str(path / "pytorch_model.bin"))
    (path / "model.safetensors").unlink()
    mlm = MaskedLM(path, backend="numpy")
    queries = _queries(4, lengths=(6,))
    got = mlm.candidates(queries, K, progress=True)
    assert got == [oracle_candidates(oracle_logits(params, head, q.piece_ids, q.position)) for q in queries]
    assert "masked LM" in capsys.readouterr().err  # the progress bar
