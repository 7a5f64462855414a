"""scripts/baseline.py reproduces every training setting of a config.json or refuses in one line, and
compare.py says what its checks cover, shows its defaults and takes --parity-limit with a --limit."""

from __future__ import annotations

import json

import pytest

import baseline
import compare
from conftest import CLASSES, run
from common import BINARY


def print_config(data_dir, *flags) -> dict:
    done = run(BINARY, "train", "--print-config", "--data", data_dir, "--num-classes", CLASSES, "--device", "cpu", *flags)
    return json.loads(done.stdout)


def test_settings_the_baseline_cannot_reproduce_are_refused_in_one_line(data_dir, tmp_path, capsys):
    assert baseline.unsupported_settings(print_config(data_dir)) == []
    assert baseline.unsupported_settings(print_config(data_dir, "--no-shuffle", "--weight-decay", "0.01")) == []
    config = print_config(data_dir, "--lr-schedule", "cosine", "--early-stopping", "2", "--precision", "bf16",
                          "--engine", "fused")
    found = baseline.unsupported_settings(config)
    assert [f.split()[0] for f in found] == ["lr_schedule", "early_stopping", "precision"], found
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit) as stopped:
        baseline.main(["--config", str(path)])
    message = str(stopped.value)
    assert message.startswith("error: ") and "\n" not in message
    assert "lr_schedule cosine" in message and "early_stopping" in message and "it honours" in message


def test_compare_replaces_a_limit_and_shows_its_defaults(capsys):
    assert compare.without_flag(["--limit", "500", "--arch", "cnn", "--limit=7"], "--limit") == ["--arch", "cnn"]
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    help_text = capsys.readouterr().out
    assert "(default: 10)" in help_text and "(default: 42)" in help_text


def test_setup_help_exits_0_and_home_is_never_required():
    import subprocess
    from conftest import ROOT
    done = subprocess.run(["env", "-u", "HOME", "bash", str(ROOT / "scripts" / "setup.sh"), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "usage: scripts/setup.sh" in done.stdout, done.stderr
    # Under `set -u`, a bare $HOME stops the script when HOME is unset: every use has a fallback.
    text = (ROOT / "scripts" / "setup.sh").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "$HOME" not in code.replace("${HOME:+$HOME", "").replace("${HOME:", ""), "a bare $HOME in setup.sh"
