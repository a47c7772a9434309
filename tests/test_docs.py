"""Every ```python example in docs/ runs, as a reader would run it: each page's blocks in order
as one script, in a fresh interpreter (so one page's ``jax_enable_x64`` does not reach
another), in a scratch folder. The pages that read Pythia data run in one folder after
docs/data.md's own example has generated ``zpole.root`` there. A block is left out only when
the line above it says ``<!-- docs-test: not run (reason) -->``; every page keeps at least one
block that runs."""

import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"(?:^(<!-- docs-test: not run \((?P<why>[^)]*)\) -->)\n)?"
                   r"^```python\n(?P<code>.*?)^```", re.S | re.M)
# Pages whose examples read zpole.root, run after data.md in its folder.
ON_GENERATED_DATA = ("data", "io", "nn", "train", "flavour_tagging", "continual")


def _pages():
    pages = {}
    for path in sorted(DOCS.glob("*.md")):
        blocks = list(BLOCK.finditer(path.read_text()))
        if blocks:
            pages[path.stem] = blocks
    return pages


PAGES = _pages()


def _script(page: str) -> str:
    blocks = PAGES[page]
    run = [m["code"] for m in blocks if m["why"] is None]
    assert run, f"docs/{page}.md has no example that runs"
    return "\n".join(run)


def _run(page: str, cwd: pathlib.Path, timeout: float = 600) -> None:
    # ``-c``, as a notebook cell would run: a script file without a ``__main__`` guard cannot
    # start the spawned process pool of ``data.generate``
    proc = subprocess.run([sys.executable, "-c", _script(page)], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, (f"docs/{page}.md example failed:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def test_block_parser_sees_every_python_fence():
    for path in DOCS.glob("*.md"):
        text = path.read_text()
        assert len(PAGES.get(path.stem, [])) == text.count("```python"), path.name


def test_skipped_blocks_say_why():
    for page, blocks in PAGES.items():
        for m in blocks:
            assert m["why"] is None or m["why"].strip(), f"docs/{page}.md: skip without reason"


STANDALONE = sorted(set(PAGES) - set(ON_GENERATED_DATA))


@pytest.mark.parametrize("page", STANDALONE)
def test_docs_example_runs(page, tmp_path):
    _run(page, tmp_path)


def test_docs_examples_on_generated_data(tmp_path):
    for page in ON_GENERATED_DATA:
        _run(page, tmp_path)
    assert (tmp_path / "zpole.root").stat().st_size > 0
