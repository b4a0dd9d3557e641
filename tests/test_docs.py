"""The docs hold together: every results file is indexed, every link in README.md and docs/ resolves."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
INDEX = RESULTS / "INDEX.md"
# Written by the configuration reference generator, which checks it in its own test.
GENERATED = {ROOT / "docs" / "configuration.md"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _markdown_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def _slug(heading: str) -> str:
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _links():
    for md in _markdown_files():
        for target in LINK.findall(md.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target):
                yield md, target


def test_index_names_every_results_file():
    index = INDEX.read_text(encoding="utf-8")
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    files = [p for p in RESULTS.rglob("*") if p.is_file() and p != INDEX]
    assert files
    for path in files:
        folder = path.parent.relative_to(RESULTS).as_posix()
        assert any(f"[{folder}]" in row and f"`{path.name}`" in row for row in rows), path
    assert len(rows) == len({p.parent for p in files})  # one row per folder


def test_results_are_in_dated_folders():
    for path in RESULTS.iterdir():
        if path != INDEX:
            assert path.is_dir() and re.match(r"\d{4}-\d{2}-\d{2}_", path.name), path


@pytest.mark.parametrize("md, target", list(_links()), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_links_point_at_existing_files(md, target):
    path_part, _, anchor = target.partition("#")
    resolved = (md.parent / path_part).resolve() if path_part else md
    if resolved in GENERATED:
        return
    assert resolved.exists(), f"{md.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{md.relative_to(ROOT)} links to {target}: no such heading"
