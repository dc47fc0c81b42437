"""The README and the pages of docs/ hold what they say.

Every ```python block of README.md and of every docs/*.md page runs as written: the blocks of one page in
order, in one namespace (a fresh one per page), from a fresh directory that holds the runs the pages load
(``runs/demo/vqvae``, ``runs/demo/prior``: here tiny ones, trained once for a few steps). Every relative
link of these pages (pictures included) leads to a file that exists and, where it names an anchor, to a
heading of it."""

import re
from pathlib import Path

import pytest

from vqvae.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "train.batch_size=16", "train.eval_batches=2", "model.recon_loss=logistic"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page.read_text())]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_readme_and_the_docs_have_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and all(b.strip() for b in blocks)
    assert any(page.parent.name == "docs" for page in PAGES_WITH_CODE)  # the docs' code is tested too
    assert all(b.strip() for page in PAGES_WITH_CODE for b in python_blocks(page.read_text()))


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (lower case, punctuation dropped, spaces to hyphens)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # a `# comment` in a code block is no heading
    headings = re.findall(r"^#{1,6} +(.+?) *#*$", prose, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_leads_somewhere(page):
    prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(file.read_text()):
            broken.append(f"{target}: no such heading")
    assert not broken


@pytest.fixture(scope="module")
def demo_runs(small_fmnist, tmp_path_factory) -> Path:
    """``runs/`` holding ``demo/vqvae`` and ``demo/prior``: tiny, trained once for every page."""
    runs = tmp_path_factory.mktemp("readme-runs") / "runs"
    vqvae, prior = runs / "demo" / "vqvae", runs / "demo" / "prior"
    assert main(["train", "--data", str(small_fmnist), "--out", str(vqvae), "--steps", "2", "--quiet",
                 *TINY]) == 0
    assert main(["train-prior", str(vqvae), "--out", str(prior), "--steps", "2", "--quiet",
                 "prior.num_layers=2", "prior.channels=8", "prior.head_channels=16",
                 "train.eval_batches=1"]) == 0
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_name)
def test_every_python_block_runs_in_order(page, demo_runs, tmp_path, monkeypatch):
    (tmp_path / "runs").symlink_to(demo_runs, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(python_blocks(page.read_text())):
        exec(compile(block, f"{_name(page)} python block {i + 1}", "exec"), namespace)
