"""Train a scikit-learn pipeline on iris and save it with joblib.

Run from the directory that contains the `trainer` package::

    python -m trainer.sklearn_task --job-dir out --model forest --n-estimators 50

Outputs (``<out>`` is ``--job-dir``, plus ``/<trial>`` when ``TF_CONFIG`` names a trial):

* ``<out>/model/model.joblib``: the fitted ``Pipeline(StandardScaler, classifier)``; it takes
  raw features, shape (n, 4), and `predict` returns class indices (0, 1, 2).
  ``$AIP_MODEL_DIR`` replaces ``<out>/model`` when set.
* ``<out>/model/metadata.json``: framework, class and feature names, test accuracy.
* ``<out>/metrics.json``: test accuracy and log loss.
* the ``accuracy`` hyperparameter tuning metric, through `cloudml-hypertune` when installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import joblib
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from trainer import common

EXPORT_FILENAME = "model.joblib"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the trainer's command line (``--job-dir X`` and ``--job-dir=X`` both work)."""
    parser = argparse.ArgumentParser(
        prog="trainer.sklearn_task", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--job-dir", required=True, help="where outputs are written")
    parser.add_argument(
        "--model", choices=("logreg", "forest"), default="logreg", help="the classifier"
    )
    parser.add_argument(
        "--n-estimators", type=int, default=100, help="trees in the forest (--model forest)"
    )
    parser.add_argument(
        "--c",
        type=float,
        default=1.0,
        help="inverse regularisation strength (--model logreg)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the model")
    args = parser.parse_args(argv)
    if args.n_estimators < 1 or args.c <= 0:
        parser.error("--n-estimators must be >= 1 and --c > 0")
    return args


def build_pipeline(args: argparse.Namespace) -> Pipeline:
    """Return the unfitted ``Pipeline(StandardScaler, classifier)`` chosen by `args`."""
    classifier: ClassifierMixin
    if args.model == "forest":
        classifier = RandomForestClassifier(
            n_estimators=args.n_estimators, random_state=args.seed, n_jobs=1
        )
    else:
        classifier = LogisticRegression(C=args.c, max_iter=1000, random_state=args.seed)
    return Pipeline([("scale", StandardScaler()), ("classifier", classifier)])


def train(args: argparse.Namespace) -> dict[str, float]:
    """Fit, evaluate and save the pipeline described by `args`.

    Returns:
        The metrics written to ``metrics.json``.
    """
    split = common.load_split(args.seed)
    pipeline = build_pipeline(args)
    pipeline.fit(split.x_train, split.y_train)
    accuracy = float(accuracy_score(split.y_test, pipeline.predict(split.x_test)))
    loss = float(
        log_loss(
            split.y_test,
            pipeline.predict_proba(split.x_test),
            labels=list(range(len(split.class_names))),
        )
    )
    common.log(f"model {args.model} test accuracy {accuracy:.4f} loss {loss:.4f}")

    out = common.output_dir(args.job_dir)
    directory = common.model_dir(out)
    path = common.join(directory, EXPORT_FILENAME)
    with common.open_output(path, "wb") as handle:
        joblib.dump(pipeline, handle)
    common.write_json(
        common.join(directory, "metadata.json"),
        {
            "framework": "SCIKIT_LEARN",
            "classes": split.class_names,
            "feature_names": split.feature_names,
            "accuracy": accuracy,
            "model": args.model,
            "output": "class indices from predict; probabilities from predict_proba",
        },
    )
    common.log(f"saved {path}")

    metrics = {"accuracy": accuracy, "loss": loss}
    common.write_json(common.join(out, "metrics.json"), metrics)
    if common.report_metric("accuracy", accuracy, global_step=1):
        common.log("reported hypertune metric accuracy")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainer.sklearn_task``; returns the process exit code."""
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
