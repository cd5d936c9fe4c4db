"""Command line: ``python -m dmlkit train ...`` and ``python -m dmlkit demo``.

``train`` has one option per :class:`dmlkit.train.TrainConfig` field (``--epochs 5``,
``--backbone-lr-mult 0.1``, ``--no-pretrained``, ...), plus ``--loss-param alpha=2`` and
``--dataset-param num_classes=50`` (repeatable) for the loss and data set parameters.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
import time
import typing

__all__ = ["DEMO_CONFIG", "build_parser", "main", "run_training_demo"]

#: The training demo: glyphs, small CNN, multi-similarity loss; about a minute on 2 CPU cores.
DEMO_CONFIG = {
    "dataset": "glyphs", "loss": "multi_similarity", "backbone": "small_cnn",
    "embedding_dim": 64, "epochs": 8, "iterations_per_epoch": 40, "P": 16, "K": 4,
    "lr": 1e-3, "eval_every": 2, "val_fraction": 0.2, "initial_test": True,
    "dataset_kwargs": {"num_classes": 100, "images_per_class": 40},
}

_TABLE_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision",
                  "nmi", "f1")


def _parse_value(text: str):
    """``2`` -> 2, ``0.5`` -> 0.5, ``true`` -> True, ``none`` -> None, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _key_values(items: list[str] | None, option: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"{option} expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _shown(default) -> str:
    """A default as it is typed on the command line (``none``, ``a b c`` for lists)."""
    if default is None:
        return "none"
    if isinstance(default, (tuple, list)):
        return " ".join(map(str, default))
    return str(default)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """One option per :class:`~dmlkit.train.TrainConfig` field; its help is the field's
    ``metadata["help"]`` with the default appended once."""
    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    skip = {"loss_params", "dataset_kwargs"}
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = str(hints[f.name])
        text = f"{TrainConfig.help(f.name)} (default: {_shown(default)})"
        if hint == "<class 'bool'>":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=default, help=text)
        elif f.name in ("metrics", "final_metrics"):
            p.add_argument(flag, dest=f.name, nargs="+", default=list(default), metavar="NAME",
                           help=text)
        elif f.name == "ks":
            p.add_argument(flag, dest=f.name, nargs="+", type=int, default=None, metavar="K",
                           help=text)
        else:
            conv = (_bool if "bool" in hint else
                    int if "int" in hint and "float" not in hint else
                    float if "float" in hint else str)
            p.add_argument(flag, dest=f.name, type=_none_or(conv), default=default,
                           help=text)
    p.add_argument("--loss-param", action="append", metavar="NAME=VALUE",
                   help="loss hyper-parameter, repeatable (e.g. --loss-param alpha=2)")
    p.add_argument("--dataset-param", action="append", metavar="NAME=VALUE",
                   help="data set option, repeatable (e.g. --dataset-param num_classes=50)")


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return low in ("true", "1", "yes")


def _none_or(conv):
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null") else conv(text)

    parse.__name__ = conv.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dmlkit",
        description="dmlkit: deep metric learning losses, evaluation and training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser("train", help="train an embedding network (dmlkit.train.fit)",
                           description="Train an embedding network (dmlkit.train.fit); one "
                                       "option per dmlkit.train.TrainConfig field.")
    _add_train_options(train)
    demo = sub.add_parser("demo", help="train on glyphs with multi-similarity and print the "
                                       "held-out metrics (untrained vs trained)")
    demo.add_argument("--epochs", type=int, default=DEMO_CONFIG["epochs"],
                      help=f"training epochs (default: {DEMO_CONFIG['epochs']})")
    demo.add_argument("--out-dir", default=None,
                      help="output folder (default: a temporary folder)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    nbs = sub.add_parser("notebooks", help="run every notebook at its default parameters into "
                                           "build/notebooks (ignored; the checkout stays clean)")
    nbs.add_argument("--only", nargs="*", default=None,
                     help="notebook prefixes or names, e.g. 03 09_train_full_models")
    nbs.add_argument("--in-place", action="store_true",
                     help="developers: regenerate the committed notebooks, figures and results")
    return parser


def _notebooks(args: argparse.Namespace) -> int:
    from . import nbrun

    argv = ["--only", *args.only] if args.only else []
    if args.in_place:
        argv.append("--in-place")
    return nbrun.main(argv)


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, fit

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw["loss_params"] = _key_values(args.loss_param, "--loss-param")
    kw["dataset_kwargs"] = _key_values(args.dataset_param, "--dataset-param")
    kw["metrics"], kw["final_metrics"] = tuple(kw["metrics"]), tuple(kw["final_metrics"])
    try:
        result = fit(TrainConfig(**kw))
    except ValueError as exc:  # bad names / options: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .distributed import is_main

    if is_main():   # under torchrun: rank 0 reports
        print(f"history: {result.paths.get('history', '-')}")
        print(_metrics_table({"test": result.test_metrics}).to_string())
    return 0


def _metrics_table(columns: dict[str, dict]):
    import pandas as pd

    rows = [m for m in _TABLE_METRICS if any(m in c for c in columns.values())]
    # percentages with one decimal, as every table of the collection
    return pd.DataFrame({name: [100.0 * c.get(m, float("nan")) for m in rows]
                         for name, c in columns.items()},
                        index=[f"{m} (%)" for m in rows]).round(1)


def run_training_demo(epochs: int | None = None, out_dir: str | None = None,
                      progress: bool = True, **overrides):
    """Train the small CNN on glyphs with the multi-similarity loss and print the metrics on
    the unseen test classes, untrained network vs best-on-validation model.

    Returns ``(table, result)``: a pandas DataFrame (metrics in % x [untrained, trained, gain])
    and the :class:`dmlkit.train.FitResult`.
    """
    import tempfile

    from .train import fit

    cfg = dict(DEMO_CONFIG, progress=progress, **overrides)
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(out_dir=out_dir or tmp, **cfg)
    table = _metrics_table({"untrained": result.initial_test_metrics,
                            "trained": result.test_metrics})
    table["gain"] = (table["trained"] - table["untrained"]).round(1)
    print(f"\nHeld-out test classes (glyphs, never seen in training), "
          f"best-on-validation model (epoch {result.best_epoch}); "
          f"{time.perf_counter() - t0:.0f} s, {result.config.epochs} epochs")
    print(table.to_string())
    return table, result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "notebooks":
        return _notebooks(args)
    if args.command == "demo":
        run_training_demo(epochs=args.epochs, out_dir=args.out_dir,
                          progress=not args.no_progress)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
