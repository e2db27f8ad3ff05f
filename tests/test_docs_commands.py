"""Every `distill-engine ...` command line the README and docs/*.md show (in shell blocks and in
inline code, synopses included) names a subcommand that exists and only flags that subcommand's
parser (distill_engine/cli) accepts, so a renamed or removed flag cannot linger in an example."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from distill_engine.cli.main import _parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(```|~~~)([\w-]*)[ \t]*\n(.*?)^\1[ \t]*$", re.M | re.S)
SHELL = {"bash", "sh", "shell", "console", ""}
# the command word: distill-engine (or .venv/bin/distill-engine), or python -m distill_engine.cli
COMMAND = re.compile(r"(?:^|(?<=[\s`(]))(?:[\w./-]*/)?(?:distill-engine|python3? -m distill_engine\.cli)(?=\s|$)")
# `distill-engine <argv>` in prose about the launcher, `distill-engine ...` for any command
PLACEHOLDER = re.compile(r"^(<[^>]*>|\.\.\.)$")


def _commands_in_shell(body: str) -> list[str]:
    """The argument text of every distill-engine command of a shell block (continued lines joined,
    comments dropped, cut at a pipe, redirection or command separator)."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        match = COMMAND.search(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line[match.end():], posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = []
        for word in lexer:
            if word and set(word) <= set("|&;<>()"):
                break
            words.append(word)
        out.append(words)
    return out


def _commands_in_prose(text: str) -> list[list[str]]:
    """Inline code spans that are a distill-engine command or its synopsis (`[--set k=v ...]`)."""
    prose = FENCE.sub("", text)
    out = []
    for span in re.findall(r"`([^`\n]+)`", prose):
        match = COMMAND.match(span)
        if match:
            out.append(span[match.end():].split())
    return out


def documented_commands(text: str) -> list[list[str]]:
    commands = []
    for _fence, lang, body in FENCE.findall(text):
        if lang in SHELL:
            commands.extend(_commands_in_shell(body))
    return commands + _commands_in_prose(text)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def problems(words: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What in one command's words (after `distill-engine`) the parser does not know."""
    shown = "distill-engine " + " ".join(words)
    if not words or words[0].startswith("-"):
        sub, rest = parser, words
    elif PLACEHOLDER.match(words[0]):
        return []
    else:
        sub, rest = _subparsers(parser).get(words[0]), words[1:]
        if sub is None:
            return [f"{shown}: no subcommand {words[0]!r}"]
    out = []
    for word in rest:
        flag = word.strip("[]()|,\\").split("=", 1)[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and flag not in sub._option_string_actions:
            out.append(f"{shown}: {words[0] if sub is not parser else 'distill-engine'} has no flag {flag}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_names_a_real_subcommand_and_real_flags(page):
    parser = _parser()
    found = [p for words in documented_commands(page.read_text()) for p in problems(words, parser)]
    assert found == []


def _recipe_commands() -> list[tuple[str, list[str]]]:
    """The documented `run`/`validate` commands of a recipe in this repository."""
    return [(page.name, words) for page in PAGES for words in documented_commands(page.read_text())
            if len(words) > 1 and words[0] in ("run", "validate") and (ROOT / words[1]).is_file()]


def test_every_documented_run_of_a_repository_recipe_resolves_with_its_set_overrides(capsys):
    """The whole command line parses, and the recipe it names takes its --set overrides (keys,
    types and ranges): an example cannot set a field that does not exist."""
    from distill_engine.cli.run import _overrides
    from distill_engine.recipe import load_recipe

    parser = _parser()
    commands = _recipe_commands()
    assert len(commands) > 15
    for page, words in commands:
        try:
            args = parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{page}: distill-engine {' '.join(words)}: {capsys.readouterr().err.strip()}")
        load_recipe(ROOT / args.recipe, _overrides(args))


def test_the_docs_show_commands_at_all():
    """The extraction finds the commands it must (a regex that matched nothing would pass everything)."""
    commands = [w for page in PAGES for w in documented_commands(page.read_text())]
    subcommands = {w[0] for w in commands if w}
    assert {"run", "validate", "export", "predict", "report", "compare", "augment"} <= subcommands
    assert len(commands) > 40


def test_the_check_catches_a_missing_subcommand_and_flag():
    page = ("Run `distill-engine run RECIPE [--set k=v ...] [--bogus]` or `distill-engine frobnicate X`.\n\n"
            "```bash\n.venv/bin/distill-engine validate r.toml --backend torch \\\n"
            "    --max-step 3   # a typo\n"
            ".venv/bin/distill-engine predict ckpt --text \"a --b\" | head --bogus  # a value; after the pipe: head's\n"
            ".venv/bin/python -m distill_engine.cli report runs/x --no-spead\n"
            "# .venv/bin/distill-engine run --commented-out\n```\n")
    parser = _parser()
    found = [p for words in documented_commands(page) for p in problems(words, parser)]
    assert found == [
        "distill-engine validate r.toml --backend torch --max-step 3: validate has no flag --max-step",
        "distill-engine report runs/x --no-spead: report has no flag --no-spead",
        "distill-engine run RECIPE [--set k=v ...] [--bogus]: run has no flag --bogus",
        "distill-engine frobnicate X: no subcommand 'frobnicate'",
    ]
