"""python -m dmlkit: the train command, its help, and errors as messages."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys

import pytest

from dmlkit.__main__ import build_parser, main
from dmlkit.train import TrainConfig


def test_cli_train_and_help(tmp_path, capsys):
    rc = main(["train", "--dataset", "glyphs", "--loss", "multi_similarity",
               "--loss-param", "alpha=2", "--loss-param", "beta=40", "--epochs", "1",
               "--iterations-per-epoch", "2", "--P", "4", "--K", "4", "--embedding-dim", "8",
               "--dataset-param", "num_classes=8", "--dataset-param", "images_per_class=6",
               "--dataset-param", "size=16", "--no-progress", "--out-dir", str(tmp_path),
               "--device", "cpu", "--num-workers", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["loss_params"] == {"alpha": 2, "beta": 40}
    assert cfg["dataset_kwargs"]["num_classes"] == 8 and cfg["epochs"] == 1
    assert (tmp_path / "history.csv").exists() and "map@r" in out
    assert main(["train", "--loss", "nope", "--out-dir", str(tmp_path)]) == 2
    assert "Known losses" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--channels-last", "false", "--amp", "none",
                                      "--grad-clip", "1.5", "--no-pretrained", "--ks", "1",
                                      "10", "--iterations-per-epoch", "none"])
    assert (args.channels_last, args.amp, args.grad_clip, args.pretrained, args.ks,
            args.iterations_per_epoch) == (False, None, 1.5, False, [1, 10], None)
    done = subprocess.run([sys.executable, "-m", "dmlkit", "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--loss-param" in done.stdout


def _train_parser():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_train_help_says_what_each_option_does_and_prints_each_default_once(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert not re.search(r"\(default: [^)]*\) \(default:", text)
    assert "(default: glyphs)" in text and text.count("(default: glyphs)") == 1
    options = [a for a in _train_parser()._actions if a.dest != "help"]
    for action in options:
        assert action.help and action.help.count("(default:") <= 1, action.dest
    # one line of help per TrainConfig field, taken from the field (one place)
    names = {a.dest: a for a in options}
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("loss_params", "dataset_kwargs"):
            continue
        help_text = TrainConfig.help(field.name)
        assert help_text and "\n" not in help_text
        assert names[field.name].help.startswith(help_text), field.name
        assert " ".join(help_text.split()) in text, field.name
    assert text.count("(default:") == sum("(default:" in a.help for a in options)


def test_train_with_a_corrupt_checkpoint_is_an_error_message(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"\x80\x02 half a checkpoint")
    rc = main(["train", "--epochs", "1", "--iterations-per-epoch", "1", "--P", "4", "--K", "4",
               "--embedding-dim", "8", "--dataset-param", "num_classes=8",
               "--dataset-param", "images_per_class=6", "--dataset-param", "size=16",
               "--no-progress", "--no-verbose", "--out-dir", str(tmp_path), "--device", "cpu",
               "--resume"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(tmp_path / "last.pt") in err and "corrupt or truncated" in err
    assert "Traceback" not in err
