"""The README and docs/*.md: every relative Markdown link and image points at a file inside the
repository (never outside it, e.g. at ../shared), every `#anchor` names a heading of its page, every
```toml block parses, and the README stays a first screen and an index (under 300 lines)."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _ids(page: Path) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in page] if isinstance(page, list) else str(page.relative_to(ROOT))


def _without_code(text: str) -> str:
    text = re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", text, flags=re.M | re.S)  # fenced blocks
    return re.sub(r"`[^`\n]*`", "", text)  # inline code


def links(text: str) -> list[str]:
    return LINK.findall(_without_code(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - and _), spaces -> -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", text, flags=re.M | re.S)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Every link of `page` that leaves `root`, points at nothing, or names a missing anchor."""
    problems = []
    text = page.read_text()
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository ({resolved})")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file ({resolved})")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            problems.append(f"{target}: {resolved.name} has no heading #{anchor}")
    return problems


def toml_blocks(text: str) -> list[str]:
    return re.findall(r"^```toml[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_every_relative_link_resolves_inside_the_repository(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_every_toml_block_parses(page):
    for block in toml_blocks(page.read_text()):
        try:
            tomllib.loads(block)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{page.relative_to(ROOT)}: a ```toml block does not parse ({exc}):\n{block}")


RECIPE_TABLES = {"run", "teacher", "student", "data", "augment", "phases"}


def as_recipe(block: dict) -> dict | None:
    """A ```toml example as a whole recipe when it is part of one: tables of a recipe (given an
    evaluate phase when it has none), or the keys of one phase; None for other files' TOML
    (pyproject.toml) and for a task of a type a plugin brings (the core cannot check it)."""
    import attrs

    from distill_engine.recipe.schema import PhaseSpec
    from distill_engine.tasks.registry import TASK_TYPES

    task = block.get("data", {}).get("task") if isinstance(block.get("data"), dict) else None
    if isinstance(task, dict) and task.get("type", "sequence") not in TASK_TYPES.all():
        return None
    if set(block) <= RECIPE_TABLES:
        return {"phases": [{"name": "p", "kind": "evaluate"}], **block}
    if set(block) <= {f.name for f in attrs.fields(PhaseSpec)}:
        return {"phases": [{"name": "p", "kind": "task_distill_intermediate", **block}]}
    return None


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_every_recipe_toml_example_is_a_valid_recipe_part(page):
    """Not only TOML: the recipe schema takes it (keys, types, ranges, loss parameters)."""
    from distill_engine.recipe import structure

    for block in toml_blocks(page.read_text()):
        recipe = as_recipe(tomllib.loads(block))
        if recipe is not None:
            structure(recipe, source=f"{page.relative_to(ROOT)}: a ```toml example")


def test_the_recipe_examples_checked_are_the_docs_recipe_parts():
    kinds = sorted(str(sorted(tomllib.loads(b))) for page in PAGES for b in toml_blocks(page.read_text())
                   if as_recipe(tomllib.loads(b)) is not None)
    assert kinds == ["['augment', 'phases']", "['data']", "['data']", "['data']", "['data']", "['losses']",
                     "['phases']"]  # tasks.md: + the token and span tables; recipes.md: early stopping
    from distill_engine.errors import RecipeError
    from distill_engine.recipe import structure

    with pytest.raises(RecipeError, match="temperatur: unknown key"):
        structure(as_recipe({"losses": [{"kind": "soft_cross_entropy", "temperatur": 2.0}]}))


def untagged_toml_blocks(text: str) -> list[str]:
    """Fenced blocks with no language that hold TOML (a key = value line or a [table]): a recipe
    example left untagged would escape the parse above."""
    out = []
    for body in re.findall(r"^```[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S):
        try:
            if tomllib.loads(body):
                out.append(body)
        except tomllib.TOMLDecodeError:
            pass
    return out


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_every_toml_example_is_tagged_toml(page):
    assert untagged_toml_blocks(page.read_text()) == [], f"{page.relative_to(ROOT)}: tag these blocks ```toml"


def test_the_readme_is_a_first_screen_and_an_index():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 300
    # every page of docs/ is in the README's index
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(text)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == [], f"docs pages the README's index does not link: {missing}"


def test_the_checks_catch_what_they_should(tmp_path):
    """The checks fail where they must: a link out of the repository, a missing file or anchor,
    a link inside code is no link, and an inline table spread over two lines is invalid TOML."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A `code` heading (with, punctuation)\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Page\n\n[data](../../shared/data) [ok](other.md) [gone](missing.md)\n"
                    "[anchor](other.md#a-code-heading-with-punctuation) [bad anchor](other.md#nope)\n"
                    "![img](pics/x.png) [web](https://example.com) [self](#page) [self bad](#nope)\n"
                    "`[code](nowhere.md)`\n\n```bash\n[in a block](nowhere.md)\n```\n")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(":")[0] for p in problems] == [
        "../../shared/data", "missing.md", "other.md#nope", "pics/x.png", "#nope"], problems
    assert "outside the repository" in problems[0]
    bad = '[data]\ntask = { name = "reviews", label = "verdict",\n         labels = ["bad", "good"] }\n'
    (block,) = toml_blocks(f"text\n\n```toml\n{bad}```\n")
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(block)
    untagged = "```\n[run]\nseed = 1\n```\n\n```\nerror: run.seed: not a number\n```\n"
    assert untagged_toml_blocks(untagged) == ["[run]\nseed = 1\n"]
