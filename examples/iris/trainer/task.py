"""Train a PyTorch DNN classifier on iris and export it with `torch.export`.

The modern form of the `DNNClassifier` from Google's AI Platform iris tutorial. Run from the
directory that contains the `trainer` package::

    python -m trainer.task --job-dir out --epochs 3

Outputs (``<out>`` is ``--job-dir``, plus ``/<trial>`` when ``TF_CONFIG`` names a trial):

* ``<out>/model/model.pt2``: a `torch.export` program with a dynamic batch dimension. It takes
  raw float32 features, shape (batch, 4), standardises them itself, and returns class
  probabilities, shape (batch, 3). ``$AIP_MODEL_DIR`` replaces ``<out>/model`` when set.
* ``<out>/model/metadata.json``: framework, class and feature names, test accuracy.
* ``<out>/metrics.json``: test accuracy and losses.
* the ``accuracy`` hyperparameter tuning metric, through `cloudml-hypertune` when installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch import nn

from trainer import common
from trainer import model as iris_model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the trainer's command line (``--job-dir X`` and ``--job-dir=X`` both work)."""
    parser = argparse.ArgumentParser(prog="trainer.task", description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", required=True, help="where outputs are written")
    parser.add_argument("--epochs", type=int, default=50, help="passes over the training split")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per training step")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument(
        "--hidden-units",
        type=iris_model.hidden_units,
        default=iris_model.hidden_units("10,20,10"),
        help="comma separated hidden layer widths (default 10,20,10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the init")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.learning_rate <= 0:
        parser.error("--epochs and --batch-size must be >= 1 and --learning-rate > 0")
    return args


def train(args: argparse.Namespace) -> dict[str, float]:
    """Train, evaluate and export the model as described by `args`.

    Returns:
        The metrics written to ``metrics.json``.
    """
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    split = common.load_split(args.seed)
    mean, scale = iris_model.standardisation(split.x_train)
    net = iris_model.IrisDNN(mean, scale, args.hidden_units, len(split.class_names))
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    x_train = torch.from_numpy(split.x_train)
    y_train = torch.from_numpy(split.y_train)
    generator = torch.Generator().manual_seed(args.seed)

    train_loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        net.train()
        total, rows = 0.0, 0
        for batch in torch.randperm(len(x_train), generator=generator).split(args.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(net(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            rows += len(batch)
        train_loss = total / rows
        common.log(f"epoch {epoch} loss {train_loss:.4f}")

    accuracy, test_loss = iris_model.evaluate(net, split.x_test, split.y_test)
    common.log(f"test accuracy {accuracy:.4f} loss {test_loss:.4f}")

    out = common.output_dir(args.job_dir)
    directory = common.model_dir(out)
    metadata = iris_model.metadata(split, accuracy)
    path = iris_model.export(net, split.x_test[:8], directory, metadata)
    common.log(f"exported {path}")

    metrics = {
        "accuracy": accuracy,
        "loss": test_loss,
        "train_loss": train_loss,
        "epochs": args.epochs,
    }
    common.write_json(common.join(out, "metrics.json"), metrics)
    if common.report_metric("accuracy", accuracy, global_step=args.epochs):
        common.log("reported hypertune metric accuracy")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainer.task``; returns the process exit code."""
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
