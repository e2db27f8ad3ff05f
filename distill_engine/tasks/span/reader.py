"""Reading extractive QA: SQuAD's JSON (v1.1, and v2.0's questions without answers) and JSON Lines, strictly.

SQuAD JSON: `{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ...,
"question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}`; a v2.0 question may say
`"is_impossible": true` with no answers. JSON Lines: one question a line, `{"id": ..., "question":
..., "context": ..., "answers": [{"text": ..., "answer_start": ...}]}`, or with `"answers": {"text":
[...], "answer_start": [...]}` as Hugging Face's `squad` dataset writes them. A file whose questions
have no "answers" at all is unlabelled (predictions only).

Every problem is one `DataError` naming the file and the record's path (`data[3].paragraphs[1].qas[0]`,
or the JSON Lines line) with the article's title and the question's id where known: an answer text
that is not at its `answer_start`, an `answer_start` outside the context, a missing or empty context,
question or id, a repeated id, some questions labelled and others not, an empty file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from distill_engine.data.textfile import json_lines, read_text
from distill_engine.errors import DataError


@attrs.frozen(eq=False)
class SpanExamples:
    """Questions of a span task: each one's id, question, context, gold answers ((text, first
    character) pairs; an empty list for a v2.0 question without answer; `answers` None for an
    unlabelled file) and where it was read (its record path, for messages)."""

    task: Any  # the SpanTask they were read for (encoding reads its stride and query length)
    ids: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[list[tuple[str, int]]] | None
    where: list[str]

    @property
    def labels(self) -> list[list[tuple[str, int]]] | None:
        return self.answers

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> SpanExamples:
        """The first `n` questions (run.max_examples cuts the dev split with it)."""
        return SpanExamples(self.task, self.ids[:n], self.questions[:n], self.contexts[:n],
                            None if self.answers is None else self.answers[:n], self.where[:n])


class _Bad(Exception):
    """A problem of one record, raised inside a record's check and given its file and path by the caller."""


def _text(record: dict, key: str, what: str) -> str:
    value = record.get(key)
    if value is None:
        raise _Bad(f'no "{key}" ({what})')
    if not isinstance(value, str):
        raise _Bad(f'"{key}" is {type(value).__name__} {value!r}, expected a string')
    if not value.strip():
        raise _Bad(f'empty "{key}"')
    return value


def _answer_pairs(raw: Any) -> list[tuple[Any, Any]]:
    """(text, answer_start) pairs from SQuAD's list of records or Hugging Face's dict of lists."""
    if isinstance(raw, dict):
        texts, starts = raw.get("text"), raw.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise _Bad('"answers" as a table needs lists "text" and "answer_start" of one length')
        return list(zip(texts, starts))
    if not isinstance(raw, list):
        raise _Bad(f'"answers" is {type(raw).__name__}, expected a list of {{"text", "answer_start"}}')
    pairs = []
    for i, answer in enumerate(raw):
        if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
            raise _Bad(f'answers[{i}] is not a record {{"text": ..., "answer_start": ...}}')
        pairs.append((answer["text"], answer["answer_start"]))
    return pairs


def _answers(qa: dict, context: str) -> list[tuple[str, int]] | None:
    """A question's checked answers; None when it has no "answers" key (an unlabelled question)."""
    if "answers" not in qa:
        return None
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise _Bad(f'"is_impossible" is {impossible!r}, expected true or false')
    pairs = _answer_pairs(qa["answers"])
    if impossible:
        return []  # v2.0: its "plausible_answers" are not answers; the gold answer is no answer
    if not pairs:
        raise _Bad('"answers" is empty (a SQuAD v2.0 question without answer says "is_impossible": true)')
    out = []
    for i, (text, start) in enumerate(pairs):
        if not isinstance(text, str) or not text:
            raise _Bad(f"answers[{i}]: the text {text!r} is not a non-empty string")
        if isinstance(start, bool) or not isinstance(start, int):
            raise _Bad(f"answers[{i}]: answer_start {start!r} is not a character index")
        if not 0 <= start < len(context) or start + len(text) > len(context):
            raise _Bad(f"answers[{i}]: answer_start {start} with {len(text)} characters falls outside the "
                       f"context ({len(context)} characters)")
        found = context[start:start + len(text)]
        if found != text:
            raise _Bad(f"answers[{i}]: the text {text!r} is not at answer_start {start} (the context there "
                       f"reads {found!r})")
        out.append((text, start))
    return out


def _question(qa: Any, context: str) -> tuple[str, str, list | None]:
    if not isinstance(qa, dict):
        raise _Bad(f"is {type(qa).__name__}, expected a question record")
    qid = qa.get("id")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    if not isinstance(qid, str) or not qid.strip():
        raise _Bad(f'no "id" (each question needs one: predictions are keyed by it), got {qa.get("id")!r}')
    try:
        return qid, _text(qa, "question", "the question's text"), _answers(qa, context)
    except _Bad as exc:
        raise _Bad(f"(question {qid}) {exc}") from None


def _records_squad(path: Path, text: str):
    """(where, id, question, context, answers or None) of each question of a SQuAD JSON file."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f'{path}: expected SQuAD\'s JSON {{"data": [{{"title", "paragraphs": [...]}}]}}')
    for a, article in enumerate(document["data"]):
        where = f"data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise DataError(f'{path}: {where}: expected an article {{"title", "paragraphs": [...]}}')
        title = article.get("title")
        named = f'{where} (article "{title}")' if isinstance(title, str) else where
        for p, paragraph in enumerate(article["paragraphs"]):
            at = f"{where}.paragraphs[{p}]"
            try:
                if not isinstance(paragraph, dict):
                    raise _Bad("is not a paragraph record {\"context\", \"qas\"}")
                context = _text(paragraph, "context", "the paragraph's text")
                qas = paragraph.get("qas")
                if not isinstance(qas, list):
                    raise _Bad('no list "qas" (the paragraph\'s questions)')
            except _Bad as exc:
                raise DataError(f"{path}: {named}: {at}: {exc}") from None
            for q, qa in enumerate(qas):
                try:
                    qid, question, answers = _question(qa, context)
                except _Bad as exc:
                    raise DataError(f"{path}: {named}: {at}.qas[{q}]: {exc}") from None
                yield f"{at}.qas[{q}]", qid, question, context, answers


def _records_jsonl(path: Path, text: str):
    for number, record in json_lines(path, text):
        try:
            if not isinstance(record, dict):
                raise _Bad('expected a record {"id", "question", "context", "answers"}')
            context = _text(record, "context", "the passage the answer is cut from")
            qid, question, answers = _question(record, context)
        except _Bad as exc:
            raise DataError(f"{path}:{number}: {exc}") from None
        yield f"line {number}", qid, question, context, answers


def read_span_examples(path: Path, task) -> SpanExamples:
    """Read one split of a span task (SQuAD JSON or JSON Lines, `task.format`), every record checked."""
    path = Path(path)
    text = read_text(path, "data file")
    records = _records_jsonl(path, text) if task.format == "jsonl" else _records_squad(path, text)
    ids, questions, contexts, answers, where = [], [], [], [], []
    seen: dict[str, str] = {}
    for at, qid, question, context, gold in records:
        if qid in seen:
            raise DataError(f"{path}: {at}: question id {qid!r} is also the id of {seen[qid]}")
        seen[qid] = at
        if answers and (answers[0] is None) != (gold is None):
            raise DataError(f'{path}: {at}: (question {qid}) some questions have "answers" and others not '
                            f'(first: {where[0]})')
        ids.append(qid)
        questions.append(question)
        contexts.append(context)
        answers.append(gold)
        where.append(at)
    if not ids:
        raise DataError(f"{path}: empty file (no questions)")
    return SpanExamples(task, ids, questions, contexts, None if answers[0] is None else answers, where)
