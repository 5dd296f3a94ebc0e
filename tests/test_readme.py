"""README.md is the tour: what lmforge is, the two set-up commands (the second is what CI runs),
one example per verb, and links to the pages of docs/. Its examples run in tests/test_docs.py."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_readme_has_the_two_setup_commands():
    setup = readme_blocks("bash")[0]
    assert "pip install -e . && lmforge quickstart" in setup
    assert re.search(r'pip install -e "\.\[test\]" && python -m pytest\s+# run the tests', setup)
    ci = (ROOT / ".ci" / "run").read_text()
    readme_line = re.search(r"^(.*?)\s*# run the tests$", setup, flags=re.M)[1]
    ci_line = re.search(r"^(.*?)\s*# run the tests$", ci, flags=re.M)[1]
    assert ci_line == readme_line == 'pip install -e ".[test]" && python -m pytest'   # CI runs the README's command


def test_readme_is_a_short_tour_that_links_every_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250, "README.md is the first ten minutes: the rest goes into a page of docs/"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    for link in local:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= set(local), f"README.md does not link to {sorted(pages - set(local))}"
