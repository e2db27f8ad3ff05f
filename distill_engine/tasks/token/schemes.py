"""Tag schemes: which tags a scheme has, and which tag may follow which.

IOB1 (CoNLL-2003's original release): I-X inside or at the start of a chunk, B-X only to start a
chunk right after another chunk of type X. IOB2 (BIO; the shared CoNLL-2003 files): every chunk
starts with B-X, I-X only continues one. BIOES: single-word chunks S-X, longer ones B-X I-X... E-X.
`O` is outside any chunk in all three.

`problem(tags, scheme)` finds the first tag the scheme forbids where it stands; the reader reports
it as one line naming file:line. IOB1's B-X rule is not enforced: files called IOB1 often start
chunks with B- anyway, and the entity metrics read such a chunk the same either way.
"""

from __future__ import annotations

SCHEMES = ("IOB1", "IOB2", "BIOES")
OUTSIDE = "O"
PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}
_ORDER = {"B": 0, "I": 1, "E": 2, "S": 3}


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") of "B-PER"; ("O", "") of "O"."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def malformed(tag: str, scheme: str) -> str | None:
    """Why `tag` is no tag of `scheme` (None: it is one)."""
    prefix, kind = split_tag(tag)
    if prefix == OUTSIDE:
        return None
    if prefix not in PREFIXES[scheme] or not kind or "-" not in tag:
        forms = ", ".join([OUTSIDE] + [f"{p}-<type>" for p in PREFIXES[scheme]])
        return f"tag {tag!r} is not a {scheme} tag ({forms})"
    return None


def problem(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """(index, message) of the first tag of one sentence that `scheme` forbids where it stands
    (a malformed tag included), or None."""
    previous = (OUTSIDE, "")
    for i, tag in enumerate(tags):
        why = malformed(tag, scheme)
        if why:
            return i, why
        prefix, kind = split_tag(tag)
        continues = previous[0] in ("B", "I") and previous[1] == kind
        if scheme == "IOB2" and prefix == "I" and not continues:
            return i, f"{tag} does not continue a chunk of type {kind} (IOB2 starts every chunk with B-{kind})"
        if scheme == "BIOES":
            if prefix in ("I", "E") and not continues:
                return i, f"{tag} does not continue a chunk of type {kind} (BIOES starts one with B-{kind} or S-{kind})"
            if previous[0] in ("B", "I") and not (prefix in ("I", "E") and continues):
                return i - 1, (f"{previous[0]}-{previous[1]} is not followed by I-{previous[1]} or E-{previous[1]} "
                               f"(BIOES ends every chunk with E- or S-)")
        previous = (prefix, kind)
    if scheme == "BIOES" and previous[0] in ("B", "I"):
        return len(tags) - 1, f"{tags[-1]} ends the sentence inside a chunk (BIOES ends every chunk with E- or S-)"
    return None


def sort_labels(labels) -> tuple[str, ...]:
    """A label set in a stable order: O first (the MindSpore zoo's label 0), then by type and prefix."""
    rest = sorted((t for t in set(labels) if t != OUTSIDE), key=lambda t: (split_tag(t)[1], _ORDER.get(split_tag(t)[0], 9)))
    return ((OUTSIDE,) if OUTSIDE in set(labels) else ()) + tuple(rest)


def inside_of(tag: str) -> str:
    """The tag a word's later pieces get with label_all_tokens (Hugging Face run_ner's b_to_i_label):
    B-X becomes I-X; every other tag stays."""
    prefix, kind = split_tag(tag)
    return f"I-{kind}" if prefix == "B" else tag
