"""dmlkit.train.config: one line of help per field, checked and completed settings."""

from __future__ import annotations

import dataclasses

import pytest

from dmlkit import data
from dmlkit.train.config import TrainConfig, metric_keys, resolve_config


def test_every_field_has_one_line_of_help():
    for field in dataclasses.fields(TrainConfig):
        text = TrainConfig.help(field.name)
        assert text and "\n" not in text and len(text) < 100, field.name


def test_recall_ks_and_names_come_from_the_dataset_registry():
    for name in data.available():
        info = data.dataset_info(name)
        spelling = info.aliases[0] if info.aliases else name.upper()
        cfg = resolve_config(None, {"dataset": spelling})
        assert cfg.dataset == info.name and cfg.ks == info.recall_ks
    assert resolve_config(None, {"dataset": "sop", "ks": [1, 10]}).ks == (1, 10)
    assert resolve_config(None, {"dataset": {"train": None}}).ks == (1, 2, 4, 8)


def test_bad_settings_name_the_option():
    for overrides, match in [({"epochs": 0}, "epochs must be >= 1"),
                             ({"K": 1}, "K .images per class. must be >= 2"),
                             ({"iterations_per_epoch": 0}, "iterations_per_epoch"),
                             ({"val_fraction": 1.0}, "val_fraction"),
                             ({"amp": "fp8"}, "amp must be"),
                             ({"select_metric": "recall@3"}, "recall@1"),
                             ({"learning_rate": 1}, "unknown fit.. option")]:
        with pytest.raises(ValueError, match=match):
            resolve_config(None, overrides)


def test_defaults_are_not_shared_between_configs():
    a, b = TrainConfig(), TrainConfig()
    a.loss_params["alpha"] = 2
    assert b.loss_params == {} and metric_keys(("precision",), (5,)) == ["precision@5"]
