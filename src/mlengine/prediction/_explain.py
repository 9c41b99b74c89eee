"""Feature attributions by sampled Shapley values (AI Platform's ``sampledShapleyAttribution``),
for any predictor: only its outputs are used, so it works for every framework, custom prediction
routines included.

For an instance ``x`` and a baseline ``b`` with features ``1..M``, each of `num_paths` random
orders of the features is walked from ``b`` to ``x``, switching one feature at a time from its
baseline value to the instance's; a feature's attribution is the mean change of the explained
score when it switched. Along every path the changes add up to ``score(x) - score(b)`` (the
attributions are exact in sum); `approx_error` is the mean standard error of the per-feature
means. The orders come from a fixed seed, so the same request gets the same explanation.

Instances are flat: a list of feature values (features by position) or an object (features by
key). Baselines come from the version's ``explanation_metadata.json`` (AI Platform's file:
``{"inputs": {NAME: {"input_baselines": [...]}}}``; several baselines are averaged), else
zeros for numeric features.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlengine.errors import InvalidArgument

__all__ = [
    "MAX_ROWS",
    "ShapleyPlan",
    "attributions",
    "baselines_for",
    "explain_instances",
    "integrated_gradients",
    "read_explanation_metadata",
]

METADATA_FILE = "explanation_metadata.json"
_SEED = 20201214


def read_explanation_metadata(model_dir: Path) -> dict[str, Any]:
    """The version's ``explanation_metadata.json``, or ``{}`` when it has none.

    Raises:
        InvalidArgument: the file is not a JSON object with an ``inputs`` object.
    """
    path = model_dir / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = orjson.loads(path.read_bytes())  # nesting is bounded, unlike json's
    except (OSError, orjson.JSONDecodeError) as error:
        raise InvalidArgument(f"The version's {METADATA_FILE} cannot be read: {error}.") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("inputs", {}), dict):
        raise InvalidArgument(f"The version's {METADATA_FILE} must be an object with 'inputs'.")
    return metadata


def baselines_for(instance: Any, metadata: Mapping[str, Any], index: int) -> list[Any]:
    """The baselines of `instance` (the `index`-th of the request): for a list instance the
    ``input_baselines`` of the metadata's one input, for an object instance each key's own
    input's first baselines; zeros where the metadata gives none.

    Raises:
        InvalidArgument: an instance that is not a flat list or object, or baselines that do
            not fit it (the message names the instance or the input).
    """
    inputs: Mapping[str, Any] = metadata.get("inputs") or {}
    if isinstance(instance, list):
        given = [_input_baselines(name, spec) for name, spec in inputs.items()]
        found = [baselines for baselines in given if baselines]
        if len(found) > 1:
            raise InvalidArgument(
                f"instance {index}: a list instance takes the baselines of one input; "
                f"{METADATA_FILE} has {len(found)}."
            )
        baselines = found[0] if found else [[0.0] * len(instance)]
        for baseline in baselines:
            if not isinstance(baseline, list) or len(baseline) != len(instance):
                raise InvalidArgument(
                    f"instance {index}: its {len(instance)} features need baselines of "
                    f"{len(instance)} values in {METADATA_FILE}; got {baseline!r}."
                )
            if not _finite_numbers(baseline):
                raise InvalidArgument(
                    f"The input_baselines of {METADATA_FILE} must hold finite numbers for list "
                    f"instances; got {baseline!r}."
                )
        return baselines
    if isinstance(instance, dict):
        by_key: dict[str, Any] = {}
        for key, value in instance.items():
            given = _input_baselines(key, inputs.get(key) or {})
            if given and _is_number(value) and not _finite_numbers([given[0]]):
                raise InvalidArgument(
                    f"The input_baselines of {key!r} in {METADATA_FILE} must be a finite number "
                    f"(instance {index} gives a number); got {given[0]!r}."
                )
            if given:
                by_key[key] = given[0]
            elif isinstance(value, int | float) and not isinstance(value, bool):
                by_key[key] = 0.0
            else:
                raise InvalidArgument(
                    f"instance {index}: feature {key!r} is not a number; give its baseline as "
                    f'{{"inputs": {{"{key}": {{"input_baselines": [...]}}}}}} in {METADATA_FILE}.'
                )
        return [by_key]
    raise InvalidArgument(
        f"instance {index}: explanations take a list of feature values or an object of "
        f"features; got {type(instance).__name__}."
    )


def _finite_numbers(values: list[Any]) -> bool:
    """Whether `values` is a (nested) list of finite numbers."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(array).all())


def _input_baselines(name: str, spec: Any) -> list[Any]:
    baselines = spec.get("input_baselines") if isinstance(spec, Mapping) else None
    if baselines is None:
        return []
    if not isinstance(baselines, list) or not baselines:
        raise InvalidArgument(
            f"The input {name!r} of {METADATA_FILE} must have a non-empty 'input_baselines' list."
        )
    return baselines


@dataclasses.dataclass(frozen=True)
class ShapleyPlan:
    """The rows to predict for one instance and one baseline: row 0 is the baseline, row 1 the
    instance, then for each path the ``M - 1`` rows between them (the last switch of a path
    gives the instance itself)."""

    rows: list[Any]
    orders: np.ndarray  # (paths, M) feature positions in switching order
    features: list[Any]  # positions (list instances) or keys (object instances)

    @classmethod
    def build(cls, instance: Any, baseline: Any, num_paths: int) -> ShapleyPlan:
        """The plan for `instance` against `baseline` with `num_paths` orders."""
        features: list[Any] = (
            list(range(len(instance))) if isinstance(instance, list) else list(instance)
        )
        count = len(features)
        if count <= 1:
            num_paths = 1  # one feature (or none) takes the whole change: nothing to sample
        rng = np.random.default_rng(_SEED)
        orders = np.array([rng.permutation(count) for _ in range(num_paths)]).reshape(
            num_paths, count
        )
        rows: list[Any] = [_copy(baseline), _copy(instance)]
        for order in orders:
            current = _copy(baseline)
            for position in order[:-1]:
                feature = features[position]
                current[feature] = instance[feature]
                rows.append(_copy(current))
        return cls(rows, orders, features)


def _copy(row: Any) -> Any:
    return list(row) if isinstance(row, list) else dict(row)


def attributions(plan: ShapleyPlan, scores: Sequence[float]) -> tuple[np.ndarray, float]:
    """Per-feature attributions (in `plan.features` order) from the explained score of each of
    `plan.rows`, and the approximation error."""
    values = np.asarray(scores, dtype=np.float64)
    count = len(plan.features)
    paths = len(plan.orders)
    if count == 0:
        return np.zeros(0), 0.0
    walked = values[2:].reshape(paths, count - 1) if count > 1 else np.zeros((paths, 0))
    along = np.column_stack([np.full(paths, values[0]), walked, np.full(paths, values[1])])
    deltas = np.diff(along, axis=1)  # (paths, M): the change at each switch
    per_feature = np.zeros((paths, count))
    np.put_along_axis(per_feature, plan.orders, deltas, axis=1)
    mean = per_feature.mean(axis=0)
    error = float(per_feature.std(axis=0, ddof=1).mean() / np.sqrt(paths)) if paths > 1 else 0.0
    return mean, error


Predict = Callable[[list[Any], Mapping[str, Any]], Awaitable[list[Any]]]
"""``predict(instances, options)``: the version's predictions (its batcher)."""

MAX_ROWS = 200_000
"""The most rows one explain request may predict (instances x paths x features)."""


async def explain_instances(
    instances: Sequence[Any],
    predict: Predict,
    metadata: Mapping[str, Any],
    num_paths: int,
    options: Mapping[str, Any],
    *,
    probabilities: bool = True,
) -> list[dict[str, Any]]:
    """One explanation per instance, as AI Platform's explain answers:
    ``{"attributions_by_label": [{"label_index", "example_score", "baseline_score",
    "attributions", "approx_error", "output_name"}]}``. A classifier's explained score is the
    probability of the class it predicts for the instance; a regressor's, its prediction; a
    model with several outputs, the highest. Without `probabilities` (a framework whose
    predictor does not take that option: its outputs are explained as they are, as
    ``outputs``), the option is not asked for.

    Raises:
        InvalidArgument: an instance or baseline that does not fit, a model whose outputs are
            not numbers, or a request over `MAX_ROWS` rows (the message names the instance).
    """
    every = [baselines_for(instance, metadata, index) for index, instance in enumerate(instances)]
    total = sum(
        len(baselines) * (num_paths * max(len(instance) - 1, 0) + 2)
        for instance, baselines in zip(instances, every, strict=True)
    )
    if total > MAX_ROWS:
        raise InvalidArgument(
            f"This request needs {total} predictions to explain (per instance and baseline, "
            f"numPaths x (features - 1) + 2); the limit is {MAX_ROWS}: send fewer instances "
            "or lower numPaths."
        )
    if not instances:
        return []
    plain = {key: value for key, value in options.items() if key != "probabilities"}
    scored = {**options, "probabilities": True} if probabilities else plain
    try:
        outputs = await predict(list(instances), scored)
    except InvalidArgument:  # not a classifier, or a bad instance: named by the retry
        if scored is plain:
            raise
        scored = plain
        outputs = await predict(list(instances), scored)
    explanations = []
    for index, (instance, baselines) in enumerate(zip(instances, every, strict=True)):
        label, name = _explained_output(outputs[index], index, "probabilities" in scored)
        results = []
        for baseline in baselines:
            plan = await asyncio.to_thread(ShapleyPlan.build, instance, baseline, num_paths)
            scores = [_score(output, label, index) for output in await predict(plan.rows, scored)]
            mean, error = attributions(plan, scores)
            results.append((mean, error, scores[0], scores[1]))  # a Result
        render = functools.partial(_by_feature, instance, metadata=metadata)
        explanations.append(_explanation(label, name, results, render))
    return explanations


def _explained_output(output: Any, index: int, probabilities: bool) -> tuple[int | None, str]:
    """Which part of a model output is explained: None for a scalar, else the position of
    its highest value; and the output's name."""
    if _is_number(output):
        return None, "prediction"
    values = np.asarray(output, dtype=object).ravel() if isinstance(output, list) else None
    if values is None or not len(values) or not all(_is_number(v) for v in values):
        raise InvalidArgument(
            f"instance {index}: explanations need numeric model outputs; got {output!r}."
        )
    return int(np.argmax(values.astype(np.float64))), (
        "probabilities" if probabilities else "outputs"
    )


def _score(output: Any, label: int | None, index: int) -> float:
    if label is None:
        return float(output)
    return float(np.asarray(output, dtype=np.float64).ravel()[label])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _by_feature(instance: Any, values: np.ndarray, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Attributions keyed as the instance's features: an object's keys, or for a list the
    metadata's one input name (``features`` without metadata) with one value per position."""
    if isinstance(instance, dict):
        return {key: float(value) for key, value in zip(instance, values, strict=True)}
    return {_input_name(metadata): [float(v) for v in values]}


async def integrated_gradients(
    instances: Sequence[Any],
    predict: Predict,
    metadata: Mapping[str, Any],
    num_steps: int,
    options: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One explanation per instance by integrated gradients (AI Platform's
    ``integratedGradientsAttribution``), for a predictor that answers
    ``predict(rows, {"input_gradients": K})`` with each row's gradient of output ``K``: the
    path from the baseline to the instance is cut in `num_steps` (midpoints), and an input's
    attribution is its change times the mean gradient along the path. ``approx_error`` is how
    far the attributions' sum is from ``example_score - baseline_score``, relative to it.
    Instances are (nested) lists of numbers; attributions keep their shape.

    Raises:
        InvalidArgument: an instance that is not a list of numbers, baselines that do not fit,
            outputs that are not numbers, or a request over `MAX_ROWS` rows.
    """
    if not instances:
        return []
    points = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, list):
            raise InvalidArgument(
                f"instance {index}: integrated gradients take lists of numbers; got "
                f"{type(instance).__name__}."
            )
        try:
            points.append(np.asarray(instance, dtype=np.float64))
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"instance {index}: integrated gradients take (nested) lists of numbers."
            ) from None
    every = [baselines_for(instance, metadata, index) for index, instance in enumerate(instances)]
    total = sum(len(baselines) * (num_steps + 2) for baselines in every)
    if total > MAX_ROWS:
        raise InvalidArgument(
            f"This request needs {total} gradients to explain (per instance and baseline, "
            f"numIntegralSteps + 2); the limit is {MAX_ROWS}: send fewer instances or lower "
            "numIntegralSteps."
        )
    outputs = await predict(list(instances), options)
    alphas = (np.arange(num_steps) + 0.5) / num_steps
    explanations = []
    for index, (point, baselines) in enumerate(zip(points, every, strict=True)):
        label, name = _explained_output(outputs[index], index, False)
        results = []
        for baseline in baselines:
            start = _baseline_array(baseline, point, index, bool(metadata.get("inputs")))
            path = start + alphas.reshape((-1,) + (1,) * point.ndim) * (point - start)
            rows = await asyncio.to_thread(path.tolist)  # large for images: off the loop
            gradients = np.asarray(
                await predict(rows, {**options, "input_gradients": label or 0}),
                dtype=np.float64,
            ).reshape(path.shape)
            values = (point - start) * gradients.mean(axis=0)
            ends = await predict([point.tolist(), start.tolist()], options)
            example, base = (_score(output, label, index) for output in ends)
            change = example - base
            error = abs(float(values.sum()) - change) / max(abs(change), 1e-12)
            results.append((values, error, base, example))
        explanations.append(
            _explanation(label, name, results, lambda mean: {_input_name(metadata): mean.tolist()})
        )
    return explanations


Result = tuple[np.ndarray, float, float, float]
"""One baseline's attributions, approximation error, baseline score and example score."""


def _explanation(
    label: int | None,
    name: str,
    results: Sequence[Result],
    render: Callable[[np.ndarray], dict[str, Any]],
) -> dict[str, Any]:
    """AI Platform's explanation of one instance from its `results` (one per baseline,
    averaged); `render` keys the mean attributions as the instance's features."""
    mean = np.mean([result[0] for result in results], axis=0)
    return {
        "attributions_by_label": [
            {
                "label_index": label or 0,
                "output_name": name,
                "example_score": results[0][3],
                "baseline_score": float(np.mean([result[2] for result in results])),
                "approx_error": float(np.mean([result[1] for result in results])),
                "attributions": render(mean),
            }
        ]
    }


def _input_name(metadata: Mapping[str, Any]) -> str:
    """The name list-instance attributions go under: the metadata's one input, else
    ``features``."""
    names = list((metadata.get("inputs") or {}).keys())
    return names[0] if len(names) == 1 else "features"


def _baseline_array(baseline: Any, point: np.ndarray, index: int, given: bool) -> np.ndarray:
    """A baseline of the instance's shape: as the metadata gives it, else zeros."""
    if not given:
        return np.zeros_like(point)
    try:
        start = np.asarray(baseline, dtype=np.float64)
    except (TypeError, ValueError):
        start = None
    if start is None or start.shape != point.shape:
        raise InvalidArgument(
            f"instance {index}: its shape {list(point.shape)} needs baselines of that shape in "
            f"{METADATA_FILE}."
        )
    return start
