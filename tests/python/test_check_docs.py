"""scripts/check_docs.py: relative links and anchors resolve, the flags the docs show exist in the binary's
--help — first on pages written here with known mistakes, then on the repository's own README.md and docs/."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import check_docs
from common import BINARY
from conftest import ROOT


def problems_in(tmp_path, pages: dict[str, str]) -> list[str]:
    for name, text in pages.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    found = []
    for name in pages:
        found += [f"{name}:{p.line}: {p.message}" for p in check_docs.check_file(tmp_path / name, str(BINARY))]
    return found


def test_links_and_anchors(tmp_path):
    found = problems_in(tmp_path, {
        "README.md": """\
            # The tool
            See [usage](docs/usage.md), [its flags](docs/usage.md#flags-of-train), [resume](docs/usage.md#resume-a-run).
            A [missing page](docs/nothing.md) and a [missing anchor](docs/usage.md#no-such-heading).
            [Web](https://example.com/x.md) and [here](#the-tool) and [nowhere](#nowhere).
            ![a picture](docs/missing.png)
            `[not a link](in/code.md)`

            [ref]: docs/gone.md
            ```text
            [not a link either](in/a/block.md)
            ```
            """,
        "docs/usage.md": """\
            # Usage
            ## Flags of `train`
            ## Resume a run
            Back to the [README](../README.md#the-tool).
            """,
    })
    assert found == [
        "README.md:3: link to docs/nothing.md: docs/nothing.md does not exist",
        "README.md:3: link to docs/usage.md#no-such-heading: no heading with the anchor #no-such-heading in usage.md",
        "README.md:4: link to #nowhere: no heading with the anchor #nowhere in README.md",
        "README.md:5: link to docs/missing.png: docs/missing.png does not exist",
        "README.md:8: link to docs/gone.md: docs/gone.md does not exist",
    ]


def test_every_page_is_reached_from_the_readme(tmp_path):
    problems_in(tmp_path, {
        "README.md": "See [usage](docs/usage.md#usage) and [the web](https://example.com/docs/lost.md).\n",
        "docs/usage.md": "# Usage\nMore in [notes](notes.md).\n",
        "docs/notes.md": "Back to [usage](usage.md) and the [README](../README.md).\n",
        "docs/lost.md": "Links to [usage](usage.md), but nothing links here.\n",
        "docs/code-only.md": "Named in code only: `[x](docs/code-only.md)`.\n",
    })
    pages = sorted((tmp_path / "docs").glob("*.md"))
    found = [f"{p.file.name}: {p.message}" for p in check_docs.unreachable_pages(tmp_path / "README.md", pages)]
    assert found == [f"{name}: no link from README.md (or from a page it links to) reaches this page"
                     for name in ("code-only.md", "lost.md")]


def test_flags_of_commands_in_code(tmp_path):
    found = problems_in(tmp_path, {"page.md": """\
        Train with `mnist-tch train --epochs 3 --tensorboard logs` or `mnist-tch train --epoch 3`.
        The mnist-tch binary has no --such-flag in prose (not code: not checked).
        ```text
        $ target/release/mnist-tch train --data data/mnist | grep --count Epoch
        mnist-tch evaluate --model RUN --json --dump-logits x.npy \\
            --top-k 3
        mnist-tch predict  --model RUN [--top-k 3]
                           [--no-such-predict-flag]
        mnist-tch frobnicate --port 8080
        MNIST_TCH_DATA=x mnist-tch summary --model RUN
        a table row: mnist-tch vs PyTorch --whatever
        ```
        """})
    unknown = found.pop()
    assert unknown.startswith("page.md:9: `mnist-tch frobnicate`: no such subcommand (mnist-tch --help lists "), unknown
    assert "train" in unknown and "predict" in unknown
    assert found == [
        "page.md:1: `mnist-tch train ... --epoch`: --epoch is not an option of mnist-tch train (see its --help)",
        "page.md:5: `mnist-tch evaluate ... --top-k`: --top-k is not an option of mnist-tch evaluate (see its --help)",
        "page.md:7: `mnist-tch predict ... --no-such-predict-flag`: --no-such-predict-flag is not an option of "
        "mnist-tch predict (see its --help)",
    ]


def test_github_slugs():
    assert check_docs.github_slug("Flags of `train` (and finetune)") == "flags-of-train-and-finetune"
    assert check_docs.github_slug("Memory: peak RSS, 1 epoch") == "memory-peak-rss-1-epoch"
    assert check_docs.github_slug("[Link](x.md) text") == "link-text"


def test_the_repository_s_docs_pass():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_docs.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
