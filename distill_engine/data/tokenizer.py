"""Tokenisation producing fixed-length `EncodedDataset`s: BERT's WordPiece from a vocab.txt, and
the other families' tokenizers of the `tokenizers` library (RoBERTa's byte-level BPE from
vocab.json + merges.txt, XLM-R's SentencePiece Unigram from a tokenizer.json): one class, whose
special tokens are named by role (pad, unk, cls, sep, mask) so that `<s>`/`</s>`/`<pad>` serve where
BERT has [CLS]/[SEP]/[PAD]."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import BertWordPieceTokenizer

from distill_engine.data.encoded import EncodedDataset
from distill_engine.data.textfile import read_text
from distill_engine.errors import DataError

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Rows tokenised per library call in encode(): large enough for its parallel batch, small enough
# that the per-row Encoding objects of one block stay a few tens of MB.
ENCODE_BLOCK = 8192


def check_vocab(path) -> int:
    """Check a WordPiece vocab.txt without building a tokenizer (UTF-8, one token a line, the
    special tokens present) and return its size: the largest token id it gives is size - 1."""
    path = Path(path)
    text = read_text(path, "vocab file")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t.rstrip() for t in tokens]  # as the library reads them (trailing \r and blanks dropped)
    if not tokens:
        raise DataError(f"{path}: empty vocab file")
    present = set(tokens)
    missing = [t for t in _SPECIAL if t not in present]
    if missing:
        raise DataError(f"{path}: vocab has no {', '.join(missing)} token{'s' if len(missing) > 1 else ''}")
    return len(tokens)


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{what}[{i}] is {type(text).__name__} {text!r}, expected a string")
    return texts


# BERT's special tokens by role (the order of _SPECIAL)
WORDPIECE_SPECIAL = dict(zip(("pad", "unk", "cls", "sep", "mask"), _SPECIAL))


class WordPieceTokenizer:
    """Uncased/cased BERT WordPiece tokenizer (Hugging Face `tokenizers`) built from a vocab.txt.

    `_build` gives the library tokenizer and `special` the special tokens by role: a subclass
    (`LibraryTokenizer`) reads another kind of vocabulary file with the same encoding methods."""

    special = WORDPIECE_SPECIAL

    def __init__(self, vocab_path, lowercase: bool = True) -> None:
        path = Path(vocab_path)
        if not path.is_file():
            raise DataError(f"{path}: vocab file not found")
        self.vocab_path = path
        self.lowercase = lowercase
        self._tok = self._build(path, lowercase)
        ids = {}
        for role, token in self.special.items():
            tid = self._tok.token_to_id(token)
            if tid is None:
                raise DataError(f"{path}: vocab has no {token} token")
            ids[role] = tid
        self._ids = ids

    def _build(self, path: Path, lowercase: bool):
        return BertWordPieceTokenizer(str(path), lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        """Number of entries in the vocabulary."""
        return int(self._tok.get_vocab_size())

    @property
    def pad_id(self) -> int:
        """Id of [PAD]."""
        return self._ids["pad"]

    @property
    def cls_id(self) -> int:
        """Id of [CLS]."""
        return self._ids["cls"]

    @property
    def sep_id(self) -> int:
        """Id of [SEP]."""
        return self._ids["sep"]

    @property
    def mask_id(self) -> int:
        """Id of [MASK]."""
        return self._ids["mask"]

    @property
    def unk_id(self) -> int:
        """Id of [UNK]."""
        return self._ids["unk"]

    def token_to_id(self, token: str) -> int | None:
        """Id of one vocabulary entry, or None when the vocab lacks it."""
        return self._tok.token_to_id(token)

    @property
    def library_tokenizer(self):
        """The `tokenizers.Tokenizer` underneath (offsets and word ids of encodings, for data augmentation)."""
        return getattr(self._tok, "_tokenizer", self._tok)

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of one id, or None when the id is out of the vocab's range."""
        return self._tok.id_to_token(int(token_id))

    def _plain(self) -> None:
        # Truncation and padding are mutable state on the shared library object; every call
        # sets what it needs so an earlier `encode` cannot leak its max_length into `tokenize`.
        self._tok.no_truncation()
        self._tok.no_padding()

    def tokenize(self, text: str) -> list[str]:
        """Wordpieces of one text, without [CLS]/[SEP]."""
        _check_texts([text], "text")
        self._plain()
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode_pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Wordpiece ids of each text (no special tokens, no truncation), tokenised in one parallel batch."""
        texts = _check_texts(texts, "texts")
        if not texts:
            return []
        self._plain()
        return [enc.ids for enc in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Each text's wordpiece ids and each piece's [start, end) characters in the text as given
        (the library tracks them through lower-casing and accent stripping), no special tokens."""
        texts = _check_texts(texts, "texts")
        if not texts:
            return []
        self._plain()
        return [(enc.ids, enc.offsets) for enc in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode(
        self,
        texts_a: Sequence[str],
        texts_b: Sequence[str] | None,
        max_length: int,
        labels=None,
    ) -> EncodedDataset:
        """Encode single texts or text pairs as `[CLS] a [SEP] (b [SEP])`, segment ids 0 then 1, truncated longest-first and padded to exactly `max_length`; `labels` (class ids or floats) are attached as given."""
        texts_a = _check_texts(texts_a, "texts_a")
        n = len(texts_a)
        if texts_b is not None:
            texts_b = _check_texts(texts_b, "texts_b")
            if len(texts_b) != n:
                raise DataError(f"texts_b has {len(texts_b)} texts but texts_a has {n}")
        minimum = 2 if texts_b is None else 3
        if max_length < minimum:
            # Below this the library silently skips truncation instead of failing.
            raise DataError(f"max_length {max_length} is too small; need at least {minimum} for the special tokens")
        if labels is not None and len(labels) != n:
            raise DataError(f"{len(labels)} labels for {n} texts")
        if n == 0:
            empty = np.zeros((0, max_length), dtype=np.int32)
            return EncodedDataset(empty, empty.copy(), empty.copy(), labels=labels)

        features = [np.empty((n, max_length), dtype=np.int32) for _ in range(3)]
        self._tok.enable_truncation(max_length, strategy="longest_first")
        self._tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=self.special["pad"], pad_type_id=0)
        try:
            # In blocks: the library's Encoding objects (pieces as strings, offsets, masks) take
            # kilobytes a row, so a million augmented rows encoded in one batch held ~8.5 GB at once.
            for start in range(0, n, ENCODE_BLOCK):
                stop = min(start + ENCODE_BLOCK, n)
                inputs = texts_a[start:stop] if texts_b is None else list(zip(texts_a[start:stop], texts_b[start:stop]))
                encodings = self._tok.encode_batch(inputs)
                for out, field in zip(features, ("ids", "type_ids", "attention_mask")):
                    block = np.array([getattr(e, field) for e in encodings], dtype=np.int32)
                    if block.shape != (stop - start, max_length):
                        raise DataError(f"tokenizer produced sequences of shape {block.shape} for rows {start}..{stop - 1}, "
                                        f"expected ({stop - start}, {max_length})")
                    out[start:stop] = block
        finally:
            self._plain()
        input_ids, token_type_ids, attention_mask = features
        return EncodedDataset(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                              labels=labels)

    def encode_ids(self, pieces_ids_list: Sequence[Sequence[int]], max_length: int) -> EncodedDataset:
        """Wrap already-tokenised id sequences as single-segment `[CLS] ids [SEP]` rows padded to `max_length`; a sequence longer than `max_length - 2` is a DataError (the caller decides how to split)."""
        if max_length < 2:
            raise DataError(f"max_length {max_length} is too small; need at least 2 for [CLS] and [SEP]")
        n = len(pieces_ids_list)
        input_ids = np.full((n, max_length), self.pad_id, dtype=np.int32)
        attention_mask = np.zeros((n, max_length), dtype=np.int32)
        budget = max_length - 2
        for i, pieces in enumerate(pieces_ids_list):
            k = len(pieces)
            if k > budget:
                raise DataError(f"sequence {i} has {k} pieces; at most {budget} fit in max_length {max_length}")
            input_ids[i, 0] = self.cls_id
            input_ids[i, 1 : k + 1] = pieces
            input_ids[i, k + 1] = self.sep_id
            attention_mask[i, : k + 2] = 1
        return EncodedDataset(
            input_ids=input_ids,
            token_type_ids=np.zeros((n, max_length), dtype=np.int32),
            attention_mask=attention_mask,
        )


class LibraryTokenizer(WordPieceTokenizer):
    """A tokenizer of the `tokenizers` library with `special` tokens by role: a tokenizer.json
    (XLM-R's SentencePiece Unigram, any fast tokenizer's file), or a byte-level BPE vocab.json with
    merges.txt beside it (RoBERTa's, GPT-2's pre-tokenisation; `<s> a </s></s> b </s>` for pairs).
    `lowercase` is the file's own: a BPE or Unigram vocabulary is cased or not by itself."""

    special = {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"}

    def _build(self, path: Path, lowercase: bool):
        from tokenizers import Tokenizer, pre_tokenizers, processors
        from tokenizers.models import BPE

        if path.suffix != ".json" or path.name == "tokenizer.json":
            try:
                return Tokenizer.from_file(str(path))
            except Exception as exc:  # the library's own message, on one line naming the file
                raise DataError(f"{path}: not a tokenizer.json ({exc})") from None
        merges = path.with_name("merges.txt")
        if not merges.is_file():
            raise DataError(f"{path}: no merges.txt beside the byte-level BPE vocab.json")
        # as Hugging Face's RobertaTokenizerFast builds it from the same two files
        tok = Tokenizer(BPE.from_file(str(path), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        from tokenizers import decoders

        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.RobertaProcessing(
            (self.special["sep"], tok.token_to_id(self.special["sep"]) or 0),
            (self.special["cls"], tok.token_to_id(self.special["cls"]) or 0), trim_offsets=True, add_prefix_space=False)
        return tok


def check_library_vocab(path) -> int:
    """The size of a `LibraryTokenizer`'s vocabulary (its file checked as it is read)."""
    return LibraryTokenizer(path).vocab_size
