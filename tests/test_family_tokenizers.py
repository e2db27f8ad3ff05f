"""The families' tokenizers: trained with the `tokenizers` library on a few hundred SST-2 train
sentences (byte-level BPE for RoBERTa, SentencePiece Unigram for XLM-R, WordPiece for DistilBERT
and ELECTRA), saved as transformers saves them, and read by the engine's tokenizer of the family:
its token ids equal transformers' AutoTokenizer's on SST-2 dev sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill_engine.models.registry import get_family

SST2 = Path("/work/shared/data/glue/SST-2")
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"no SST-2 at {SST2} (../shared absent)")]
transformers = pytest.importorskip("transformers")
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4


def _sentences(split: str, n: int) -> list[str]:
    lines = (SST2 / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:n + 1]
    return [line.split("\t")[0] for line in lines]


def _bpe(directory: Path, train: list[str]) -> Path:
    """RoBERTa: a byte-level BPE vocab.json + merges.txt, and transformers' tokenizer of them saved beside."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(train, vocab_size=400, min_frequency=2, special_tokens=SPECIAL)
    directory.mkdir()
    bpe.save_model(str(directory))
    transformers.RobertaTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")) \
        .save_pretrained(directory / "hf")
    return directory / "vocab.json"


def _unigram(directory: Path, train: list[str]) -> Path:
    """XLM-R: a SentencePiece Unigram vocabulary given to transformers' XLMRobertaTokenizer, saved as
    its tokenizer.json (the file an XLM-R checkpoint carries)."""
    import json

    from tokenizers import SentencePieceUnigramTokenizer

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(train, vocab_size=300, special_tokens=SPECIAL, unk_token="<unk>")
    pieces = [tuple(p) for p in json.loads(unigram.to_str())["model"]["vocab"]]
    transformers.XLMRobertaTokenizer(vocab=pieces).save_pretrained(directory / "hf")
    return directory / "hf" / "tokenizer.json"


def _wordpiece(directory: Path, train: list[str]) -> Path:
    """DistilBERT and ELECTRA: an uncased WordPiece vocab.txt, and transformers' tokenizer of it."""
    from tokenizers import BertWordPieceTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(train, vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    directory.mkdir()
    wordpiece.save_model(str(directory))
    transformers.BertTokenizer(vocab=str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(directory / "hf")
    return directory / "vocab.txt"


BUILD = {"roberta": _bpe, "xlm-roberta": _unigram, "distilbert": _wordpiece, "electra": _wordpiece}


@pytest.mark.parametrize("family", list(BUILD))
def test_the_family_tokenizer_gives_transformers_ids_on_sst2_dev(family, tmp_path):
    vocab = BUILD[family](tmp_path / "tok", _sentences("train", 400))
    hf_dir = tmp_path / "tok" / "hf" if (tmp_path / "tok" / "hf").is_dir() else vocab.parent
    theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ours = get_family(family).tokenizer(vocab, lowercase=True)
    assert ours.vocab_size == get_family(family).check_vocab(vocab) == len(theirs)
    dev = _sentences("dev", 200)
    encoded = ours.encode(dev, None, max_length=32)
    expected = theirs(dev, padding="max_length", truncation=True, max_length=32)
    np.testing.assert_array_equal(encoded.input_ids, np.array(expected["input_ids"]))
    np.testing.assert_array_equal(encoded.attention_mask, np.array(expected["attention_mask"]))
    assert ours.pad_id == theirs.pad_token_id and ours.cls_id == theirs.cls_token_id
    # the ids are not trivially short: most sentences need several pieces a word
    assert encoded.attention_mask.sum() > 2 * len(dev) + sum(len(s.split()) for s in dev) // 2
