"""Which words of a text data augmentation may replace, and where they are in it.

TinyBERT's `data_augmentation.py` splits a sentence with BERT's basic tokenizer (lower-cased,
accents stripped, split at whitespace and punctuation) and treats a word as eligible when it is
made of a-z only and is not a stop word (`STOP_WORDS`, its list: NLTK's English stop words plus
"'s" and "'re"). Each eligible word is then either a single WordPiece (masked-LM candidates) or
several (GloVe neighbours).

Here the same split comes from the `tokenizers` library with the offsets of every word in the
original text, so an augmented text is the original with some word spans replaced: spacing,
punctuation and the casing of the unchanged words stay as they were (the original joins its
lower-cased basic tokens with spaces; for an uncased model both give the same token ids), and a
draw that replaces nothing is exactly the original (dropped as a duplicate).
"""

from __future__ import annotations

import re

import attrs
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

# TinyBERT's StopWordsList (data_augmentation.py): NLTK's English stop words, "'s" and "'re".
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his himself
she she's her hers herself it it's its itself they them their theirs themselves what which who whom this that that'll
these those am is are was were be been being have has had having do does did doing a an the and but if or because as
until while of at by for with about against between into through during before after above below to from up down in
out on off over under again further then once here there when where why how all any both each few more most other some
such no nor not only own same so than too very s t can will just don don't should should've now d ll m o re ve y ain
aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn
mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
's 're
""".split())

_LETTERS = re.compile(r"[a-z]+")


def eligible(word: str) -> bool:
    """A normalised (lower-cased, accent-stripped) word augmentation may replace: a-z only, not a stop word."""
    return bool(_LETTERS.fullmatch(word)) and word not in STOP_WORDS


@attrs.frozen
class Word:
    """One word of a text: its span in the original text, its normalised form, and (with a
    WordPiece vocabulary) its pieces' ids and the index of its first piece in the text's pieces."""

    start: int
    end: int
    normalized: str
    piece_ids: tuple[int, ...] = ()
    first_piece: int = 0


def basic_splitter() -> Tokenizer:
    """BERT's basic tokenisation (uncased) without a vocabulary: every word one token, with its offsets."""
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True,
                                                handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def split_words(tokenizer: Tokenizer, texts: list[str]) -> list[tuple[list[Word], list[int]]]:
    """Each text's words and its WordPiece ids (no special tokens), tokenised in one batch by
    `tokenizer` (a `tokenizers.Tokenizer`: `basic_splitter()`, or a BERT WordPiece tokenizer's,
    whose pieces then decide masked LM or GloVe). A word's normalised form is the normaliser's
    output on its span of the original text."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    norm = tokenizer.normalizer
    out = []
    for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
        words: list[Word] = []
        current, first, pieces, start, end = None, 0, [], 0, 0
        for i, (wid, (s, e), pid) in enumerate(zip(enc.word_ids, enc.offsets, enc.ids)):
            if wid != current:
                if current is not None:
                    words.append(Word(start, end, norm.normalize_str(text[start:end]), tuple(pieces), first))
                current, first, pieces, start = wid, i, [], s
            pieces.append(pid)
            end = e
        if current is not None:
            words.append(Word(start, end, norm.normalize_str(text[start:end]), tuple(pieces), first))
        out.append((words, list(enc.ids)))
    return out


def cased_like(original: str, replacement: str) -> str:
    """`replacement` in the casing of the word it replaces: "Great" -> "Good", "GREAT" -> "GOOD"."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement
