#!/usr/bin/env python3
"""Checks the documentation against the repository and the binary: every relative link in README.md and
docs/*.md resolves (the file exists; a #anchor into a Markdown file names one of its headings, slugged as
GitHub does), every page of docs/ is reached by links from README.md, and every --flag shown in a `mnist-tch SUBCOMMAND ...` command exists in that subcommand's
--help. Prints one line per problem (FILE:LINE: ...) and exits 1 when there is any.

    .venv/bin/python scripts/check_docs.py [--binary target/release/mnist-tch] [FILE.md ...]

Commands are looked for in code only (fenced blocks and `inline code`), where the docs show what to type:
`mnist-tch WORD` with WORD a subcommand of the binary, its flags up to the end of the command (a pipe, `;`,
`&&`, `>`, a `#` comment, or the end of the line; in a fenced block, indented lines that follow belong to the
command, as in a usage synopsis, and so do lines after a trailing backslash). A lowercase WORD that is not a
subcommand is reported where the command starts a line (`mnist-tch serve` before `serve` exists).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = ROOT / "target" / "release" / "mnist-tch"

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
COMMAND = re.compile(r"(?:^|(?<=[\s/`(\"']))mnist-tch\s+([a-z][a-z0-9-]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
COMMAND_END = re.compile(r"\s(?:\||;|&&|>|#)\s|\s\|$")
# What may stand before `mnist-tch` at the start of a command line: a prompt, variables, a path.
COMMAND_START = re.compile(r"^\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*/)?mnist-tch\s")


@dataclass
class Problem:
    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        try:
            name = self.file.resolve().relative_to(ROOT)
        except ValueError:
            name = self.file
        return f"{name}:{self.line}: {self.message}"


@dataclass
class Code:
    """A piece of code in a Markdown file: a fenced block's line (with its continuation) or an inline span."""
    line: int
    text: str
    in_block: bool


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[Code]]:
    """(prose lines with inline code removed, code pieces) of a Markdown text; lines numbered from 1."""
    prose: list[tuple[int, str]] = []
    code: list[Code] = []
    fence = None
    block: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        marker = re.match(r"^(`{3,}|~{3,})", stripped)
        if fence is None and marker:
            fence, block = marker.group(1), []
            continue
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                code += block_commands(block)
                fence = None
            else:
                block.append((number, line))
            continue
        for span in INLINE_CODE.finditer(line):
            code.append(Code(number, span.group(2), in_block=False))
        prose.append((number, INLINE_CODE.sub(" ", line)))
    if fence is not None:
        code += block_commands(block)
    return prose, code


def block_commands(block: list[tuple[int, str]]) -> list[Code]:
    """A fenced block's lines, each joined with the lines that continue it (a trailing backslash, or
    indented lines following a line that shows a mnist-tch command)."""
    pieces: list[Code] = []
    for number, line in block:
        previous = pieces[-1] if pieces else None
        continues = previous is not None and (
            previous.text.rstrip().endswith("\\")
            or (line[:1].isspace() and line.strip() and "mnist-tch" in previous.text.split("\n")[0]
                and not COMMAND.search(line)))
        if continues:
            previous.text = previous.text.rstrip().rstrip("\\") + "\n" + line
        else:
            pieces.append(Code(number, line, in_block=True))
    return pieces


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)              # inline HTML
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file's headings (duplicates numbered -1, -2, ... as GitHub does)."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    prose_lines = {n for n, _ in prose}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading or number not in prose_lines:
            continue
        slug = github_slug(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found |= {m.group(1) for m in re.finditer(r"""<a\s+(?:name|id)=["']([^"']+)["']""", path.read_text())}
    return frozenset(found)


def link_targets(line: str) -> list[str]:
    """The relative targets of a prose line's links (Markdown, reference definitions, HTML); URLs are left out."""
    targets = [m.group(1) for m in LINK.finditer(line)] + [m.group(1) for m in HTML_LINK.finditer(line)]
    reference = REFERENCE.match(line)
    if reference:
        targets.append(reference.group(1))
    # A URL is not checked here (no network).
    return [t for t in targets if not (re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t) or t.startswith("//"))]


def check_links(path: Path, prose: list[tuple[int, str]]) -> list[Problem]:
    problems = []
    for number, line in prose:
        for target in link_targets(line):
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path.resolve()
            if not destination.exists():
                problems.append(Problem(path, number, f"link to {target}: {file_part} does not exist"))
            elif anchor and destination.suffix == ".md" and anchor.lower() not in anchors(destination):
                problems.append(Problem(path, number, f"link to {target}: no heading with the anchor #{anchor} "
                                                      f"in {destination.name}"))
    return problems


@lru_cache(maxsize=None)
def help_text(binary: str, subcommand: str | None) -> str:
    command = [binary] + ([subcommand] if subcommand else []) + ["--help"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def subcommands(binary: str) -> set[str]:
    text = help_text(binary, None)
    listed = text.split("Commands:", 1)[1].split("\n\n", 1)[0] if "Commands:" in text else ""
    return {m.group(1) for m in re.finditer(r"^\s{2}([a-z][a-z0-9-]*)\s", listed, re.MULTILINE)} - {"help"}


def options(binary: str, subcommand: str) -> set[str]:
    """The long flags `mnist-tch SUBCOMMAND --help` declares (at the start of an option's line)."""
    declared = re.finditer(r"^\s+(?:-\w,\s+)?(--[a-z0-9][a-z0-9-]*)", help_text(binary, subcommand), re.MULTILINE)
    return {m.group(1) for m in declared} | {"--help"}


def check_commands(path: Path, code: list[Code], binary: str) -> list[Problem]:
    problems = []
    known = subcommands(binary)
    for piece in code:
        for match in COMMAND.finditer(piece.text):
            subcommand = match.group(1)
            line = piece.line + piece.text.count("\n", 0, match.start())
            line_start = piece.text.rfind("\n", 0, match.start()) + 1
            at_start = bool(COMMAND_START.match(piece.text[line_start:match.end()] + " ")) or not piece.in_block
            if subcommand not in known:
                if at_start and piece.in_block:
                    problems.append(Problem(path, line, f"`mnist-tch {subcommand}`: no such subcommand "
                                                        f"(mnist-tch --help lists {', '.join(sorted(known))})"))
                continue
            rest = piece.text[match.end():]
            end = COMMAND_END.search(rest)
            command_text = rest[:end.start()] if end else rest
            # The next command in the same piece starts a new one.
            following = COMMAND.search(command_text)
            if following:
                command_text = command_text[:following.start()]
            valid = options(binary, subcommand)
            for flag in dict.fromkeys(FLAG.findall(command_text)):
                if flag not in valid:
                    problems.append(Problem(path, line, f"`mnist-tch {subcommand} ... {flag}`: {flag} is not an "
                                                        f"option of mnist-tch {subcommand} (see its --help)"))
    return problems


def unreachable_pages(readme: Path, pages: list[Path]) -> list[Problem]:
    """The pages that no chain of links starting at `readme` reaches (a page of the manual nobody finds)."""
    reached: set[Path] = set()
    todo = [readme.resolve()]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.is_file():
            continue
        reached.add(page)
        prose, _ = split_markdown(page.read_text(encoding="utf-8"))
        for _, line in prose:
            todo += [(page.parent / t.partition("#")[0]).resolve() for t in link_targets(line) if t.partition("#")[0]]
    return [Problem(p, 1, f"no link from {readme.name} (or from a page it links to) reaches this page")
            for p in pages if p.resolve() not in reached]


def check_file(path: Path, binary: str) -> list[Problem]:
    prose, code = split_markdown(path.read_text(encoding="utf-8"))
    return check_links(path, prose) + check_commands(path, code, binary)


def default_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README.md and docs/*.md)")
    parser.add_argument("--binary", type=Path, default=DEFAULT_BINARY)
    args = parser.parse_args(argv)
    if not args.binary.exists():
        raise SystemExit(f"error: {args.binary} does not exist (cargo build --release)")
    files = args.files or default_files()
    problems = [p for f in files for p in check_file(f, str(args.binary))]
    if not args.files:
        problems += unreachable_pages(ROOT / "README.md", [f for f in files if f.parent == ROOT / "docs"])
    for problem in problems:
        print(problem)
    print(f"{len(files)} files checked: {len(problems)} problem{'s' if len(problems) != 1 else ''}",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
