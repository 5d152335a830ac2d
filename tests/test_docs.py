"""The README a newcomer reads and the documentation site: short, commands verbatim, links alive."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The two commands a newcomer copies; .ci/run executes exactly these on a clean machine.
COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
    ".venv/bin/pip install -e '.[dev,local]' && .venv/bin/llmpo run examples/local.yaml",
    ".venv/bin/python -m pytest",
]
MAX_README_LINES = 150
# A whole word: constants such as DESIGN_TOLERANCE are code, not a reference to a document.
DESIGN_REFERENCE = re.compile(r"\bDESIGN\b")
DOCS_PATH = re.compile(r"docs/[\w./-]+?\.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".html", ".json", ".jsonl", ".toml", ".js"}


def _text_files(*roots: Path):
    for root in roots:
        if root.is_file():
            yield root
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                yield path


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    assert block is not None, "README.md has no ```bash block"
    assert block.group(1).splitlines() == COMMANDS
    # Lines 3–4, right under the title: nothing to read before them.
    assert text.splitlines()[3:5] == COMMANDS


def test_no_reference_to_a_design_document():
    offenders = []
    for path in _text_files(ROOT / "src", ROOT / "docs", ROOT / "examples", README,
                            ROOT / "benchmarks"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if DESIGN_REFERENCE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_docs_page_cited_in_the_code_exists():
    cited: dict[str, str] = {}
    for path in _text_files(ROOT / "src", ROOT / "tests", ROOT / "examples", ROOT / "benchmarks"):
        for page in DOCS_PATH.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(page, str(path.relative_to(ROOT)))
    assert cited, "no docs/ page cited in the code: the pattern is wrong"
    missing = {page: source for page, source in cited.items() if not (ROOT / page).is_file()}
    assert not missing, f"pages cited but absent: {missing}"


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if "://" not in target]
    assert local, "README.md links to none of the docs"
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None
        for name in ("mkdocs", "material", "mkdocstrings_handlers")),
    reason="the docs extra (mkdocs, mkdocs-material, mkdocstrings[python]) is not installed",
)
def test_the_documentation_site_builds_strictly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "statistics" / "index.html").is_file()


@pytest.mark.parametrize("page", ["README.md", "docs/python-api.md"])
def test_the_ask_tell_example_runs_to_a_certified_answer(page):
    """The first Python block of the page, with a simulated judge: policy 0 beats the others."""
    text = (ROOT / page).read_text(encoding="utf-8")
    code = re.search(r"^```python\n(.*?)^```", text, flags=re.S | re.M).group(1)
    rng = np.random.default_rng(0)
    win_prob = np.array([[0.5, 0.7, 0.75], [0.3, 0.5, 0.5], [0.25, 0.5, 0.5]])

    # The examples name the policies, or use their indices: the first policy is the best.
    position = {"concise": 0, "chain-of-thought": 1, "persona": 2}

    def judge(i: int | str, j: int | str) -> float:
        a, b = (p if isinstance(p, int) else position[p] for p in (i, j))
        return float(rng.random() < win_prob[a, b])

    namespace = {"judge": judge, "print": lambda *args: None}
    exec(compile(code, page, "exec"), namespace)
    result = namespace["exp"].result
    assert result.certified and result.best == 0
