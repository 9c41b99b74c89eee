"""The `Predictor` seam (AI Platform's prediction interface) and the helpers the built-in
predictors share: instance validation, JSON-ready outputs, error messages, lazy imports."""

from __future__ import annotations

import abc
import base64
import binascii
import dataclasses
import enum
import importlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Self

import numpy as np

from mlengine.errors import InvalidArgument, MissingDependency, OperationFailed, invalid_field

__all__ = [
    "B64_FRAMEWORKS",
    "INPUT_EXAMPLE_FILE",
    "PREPROCESSOR_FILE",
    "Framework",
    "ModelLoadError",
    "PredictionError",
    "Predictor",
    "TensorInput",
    "TensorSignature",
    "decode_b64",
    "read_input_example",
]

_logger = logging.getLogger(__name__)

INPUT_EXAMPLE_FILE = "input_example.json"
"""Optional file of a version directory: ``{"instances": [...]}`` or a bare list."""

PREPROCESSOR_FILE = "preprocessor.joblib"
"""Optional file of a version directory: a fitted scikit-learn transformer or Pipeline."""


class Framework(enum.StrEnum):
    """The frameworks a version can be served with (ml v1 ``Version.framework``, extended)."""

    SCIKIT_LEARN = "SCIKIT_LEARN"
    XGBOOST = "XGBOOST"
    LIGHTGBM = "LIGHTGBM"
    PYTORCH = "PYTORCH"
    KERAS = "KERAS"
    ONNX = "ONNX"
    TENSORFLOW = "TENSORFLOW"
    CUSTOM = "CUSTOM"

    @classmethod
    def parse(cls, name: str) -> Framework:
        """The framework called `name`, case-insensitive; ``scikit-learn`` is accepted.

        Raises:
            InvalidArgument: no framework has that name.
        """
        key = str(name).strip().upper().replace("-", "_")
        try:
            return cls(key)
        except ValueError:
            expected = "one of " + ", ".join(member.value for member in cls)
            raise invalid_field("framework", "Version", expected, name) from None

    @property
    def library(self) -> str:
        """The short name used in prediction error messages (``sklearn``, ``xgboost``...)."""
        return _LIBRARY_NAMES[self]


_LIBRARY_NAMES = {
    Framework.SCIKIT_LEARN: "sklearn",
    Framework.XGBOOST: "xgboost",
    Framework.LIGHTGBM: "lightgbm",
    Framework.PYTORCH: "pytorch",
    Framework.KERAS: "keras",
    Framework.ONNX: "onnx",
    Framework.TENSORFLOW: "tensorflow",
    Framework.CUSTOM: "custom",
}


class PredictionError(InvalidArgument):
    """A prediction request the model cannot answer: a malformed instance, or the model raised.

    The message follows AI Platform, and names the instance when one instance is at fault:
    ``Prediction failed: Exception during sklearn prediction: instance 3: expected 4 features,
    got 5``.

    Attributes:
        instance_index: the 0-based index of the faulty instance, or None.
    """

    def __init__(self, message: str, *, instance_index: int | None = None) -> None:
        super().__init__(message)
        self.instance_index = instance_index

    @classmethod
    def during(cls, library: str, detail: str, *, instance_index: int | None = None) -> Self:
        """``Prediction failed: Exception during <library> prediction: [instance N: ]<detail>``."""
        where = "" if instance_index is None else f"instance {instance_index}: "
        return cls(
            f"Prediction failed: Exception during {library} prediction: {where}{detail}",
            instance_index=instance_index,
        )


class ModelLoadError(OperationFailed):
    """A version directory cannot be loaded: no model file, several, or the loader failed."""


class Predictor(abc.ABC):
    """A loaded model that answers ``predict(instances, **kwargs)``: AI Platform's Predictor.

    This is the interface of AI Platform's custom prediction routines, and every built-in
    framework implements it too. `from_path` builds one from a local copy of the version
    directory (it may be slow: it loads the model); `predict` is then called from one worker
    thread at a time per instance (different instances may run in parallel). `close` releases
    what the model holds; the predictor is not used after it.

    `predict` gets the request's ``instances`` list (already JSON-decoded; ``{"b64": ...}``
    wrappers are decoded by the caller where AI Platform decodes them) and, as keyword
    arguments, the other top-level fields of the request body. It returns one JSON-serialisable
    output per instance, in order. The built-in predictors honour ``probabilities: bool``
    (classifiers then return one row of class probabilities per instance) and ignore other
    keywords; they also accept a 2-D numpy array as `instances` (what the preprocessing
    wrapper passes).

    Class attributes:
        framework: the `Framework` value this predictor serves.
    """

    framework: ClassVar[str] = Framework.CUSTOM
    model_dir: Path | None = None
    """The version directory the predictor was loaded from, when known."""

    @classmethod
    @abc.abstractmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load the model held in the local directory `model_dir`.

        Raises:
            ModelLoadError: the directory holds no loadable model.
            MissingDependency: the framework's library is not installed.
        """

    @abc.abstractmethod
    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """One JSON-serialisable prediction per instance, in order.

        Raises:
            PredictionError: an instance is malformed, or the model raised.
        """

    def example_instances(self) -> list[Any] | None:
        """A small valid input for a smoke prediction, or None when none can be derived.

        ``input_example.json`` in the version directory wins; otherwise the predictor derives
        one from the model (its number of features or input shape), when it can.

        Raises:
            ModelLoadError: ``input_example.json`` is malformed.
        """
        if self.model_dir is not None:
            example = read_input_example(self.model_dir)
            if example is not None:
                return example
        return self.model_example_instances()

    def model_example_instances(self) -> list[Any] | None:
        """Hook for `example_instances`: an input derived from the model itself, or None."""
        return None

    def tensor_signature(self, **kwargs: Any) -> TensorSignature | None:
        """The model's declared tensors under the request options `kwargs` (TensorFlow's
        ``signature_name``, ``probabilities``...), or None when the model declares none
        (scikit-learn and the other tabular libraries, TorchScript, custom code, a version
        with a preprocessor: its instances are raw features, not the model's tensors).

        The Open Inference Protocol names its tensors after them. The default is None.

        Raises:
            PredictionError: options that name nothing the model has (an unknown signature).
        """
        return None

    def close(self) -> None:  # noqa: B027 - a no-op unless the model holds something
        """Release what the model holds (sessions, threads). The default does nothing."""


def read_input_example(model_dir: str | os.PathLike[str]) -> list[Any] | None:
    """The instances of ``model_dir/input_example.json``, or None when there is no such file.

    Raises:
        ModelLoadError: the file is not JSON, or holds neither a list nor ``{"instances": [...]}``.
    """
    path = Path(model_dir) / INPUT_EXAMPLE_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Could not read {path}: {error}") from error
    if isinstance(content, dict) and isinstance(content.get("instances"), list):
        return list(content["instances"])
    if isinstance(content, list):
        return content
    raise ModelLoadError(f'{path} must hold {{"instances": [...]}} or a JSON list.')


B64_FRAMEWORKS = frozenset({"TENSORFLOW", "CUSTOM", ""})
"""The frameworks whose instances get ``{"b64": ...}`` decoded (`decode_b64`) before the
predictor sees them: AI Platform's TensorFlow and custom prediction classes (no framework)."""


def decode_b64(value: Any) -> Any:
    """Replace every ``{"b64": "<base64>"}`` object by its decoded bytes, recursively.

    This is AI Platform's rule for binary inputs: an object whose only key is ``b64``.

    Raises:
        PredictionError: a ``b64`` value is not valid base64.
    """
    if isinstance(value, dict):
        if value.keys() == {"b64"}:
            encoded = value["b64"]
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, TypeError, ValueError) as error:
                raise PredictionError(
                    f"Prediction failed: the 'b64' value {_short(encoded)} is not valid base64: "
                    f"{error}"
                ) from None
        return {key: decode_b64(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_b64(item) for item in value]
    return value


# -- helpers for the built-in predictors --------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_detail(error: BaseException, *, limit: int = 500) -> str:
    """A library's exception as one readable line (ANSI codes and native stack traces cut)."""
    text = _ANSI.sub("", str(error))
    text = text.split("Stack trace:")[0]
    text = " ".join(text.split())
    if not text:
        text = type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def import_optional(module: str, *, framework: str, extra: str) -> ModuleType:
    """Import `module`, or explain how to install it.

    Raises:
        MissingDependency: the module is not installed; the message names the install command.
    """
    root = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = (
            isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == root
        )
        why = "" if missing else f" ({error})"  # installed, but broken: say how
        raise MissingDependency(
            f"The {framework} predictor needs {root}{why}. "
            f"Install it with: pip install 'mlengine[{extra}]'"
        ) from error


def first_failing_instance(
    run: Callable[[int, int], object], count: int
) -> tuple[int, BaseException] | None:
    """The first of `count` instances that fails alone, and its error, for a model that raised
    on the whole batch without saying which instance (AI Platform names it).

    ``run(start, stop)`` predicts instances ``start:stop`` and raises as the model does. A
    bisection finds the instance in about log2(`count`) calls over about `count` instances in
    all; None when the instance so found does not fail alone (the batch failed as a whole).
    """
    start, stop = 0, count  # invariant: run(start, stop) raises
    while stop - start > 1:
        middle = (start + stop) // 2
        try:
            run(start, middle)
        except Exception:
            stop = middle
        else:
            start = middle
    try:
        run(start, start + 1)
    except Exception as error:
        return start, error
    return None


def find_model_file(model_dir: str | os.PathLike[str], names: Sequence[str]) -> Path:
    """The first file of `names` (a predictor's files, in its order of preference) present at
    the top of `model_dir`.

    A framework named by the user picks its file the way AI Platform's loaders do: in their
    order (XGBoost ``model.joblib``, then ``model.pkl``, then ``model.bst``), the others
    ignored, with a warning naming them. Only detection, where no framework is named, refuses
    several model files (`detect_framework`).

    Raises:
        ModelLoadError: none of `names` is present, or `model_dir` is no directory.
    """
    directory = Path(model_dir)
    if not directory.is_dir():
        raise ModelLoadError(f"The model directory {directory} does not exist.")
    present = [name for name in names if (directory / name).exists()]
    if not present:
        raise ModelLoadError(f"No model file in {directory}: expected one of {', '.join(names)}.")
    if len(present) > 1:
        _logger.warning(
            "%s: loading %s; ignoring %s", directory, present[0], ", ".join(present[1:])
        )
    return directory / present[0]


def load_failure(path: Path, error: BaseException) -> ModelLoadError:
    """``Could not load the model in <path>: <Type>: <message>`` (chain the cause yourself)."""
    return ModelLoadError(
        f"Could not load the model in {path}: {type(error).__name__}: {error_detail(error)}"
    )


def is_missing(value: Any) -> bool:
    """True for None and NaN: what JSON and numpy use for a missing value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


class _BadInstance(Exception):
    """Internal: why one instance cannot become part of a numeric batch."""


def numeric_batch(
    instances: Sequence[Any] | np.ndarray,
    library: str,
    *,
    instance_shape: Sequence[int | None] | None = None,
    allow_nan: bool = False,
    dtype: Any = np.float64,
) -> np.ndarray:
    """The instances as one numeric array of shape ``(len(instances), *instance_shape)``.

    Each instance must be a number or a (nested) list of numbers; `instance_shape` gives the
    expected shape of one instance (None for any size along an axis, or None altogether when
    unknown: then instances must agree with each other). JSON ``null`` becomes NaN, allowed only
    when `allow_nan`. A model that takes one feature also accepts bare numbers as instances.

    Raises:
        PredictionError: naming the first instance that is not numeric or has the wrong shape.
    """
    expected = None if instance_shape is None else tuple(instance_shape)
    array: np.ndarray | None
    if isinstance(instances, np.ndarray):
        array = instances
    else:
        try:
            array = np.asarray(instances)
        except (ValueError, TypeError):
            array = None
    if array is None or array.dtype.kind not in "biuf" or array.ndim == 0:
        _explain(instances, library, expected, allow_nan)  # raises for a bad instance
        try:  # numbers mixed with None (missing values), or numpy scalars
            array = np.array(instances, dtype=np.float64)
        except (ValueError, TypeError) as error:
            raise PredictionError.during(
                library, f"instances must be numbers or lists of numbers of one shape ({error})"
            ) from None
    if expected is not None:
        if array.ndim == 1 and expected == (1,):
            array = array.reshape(-1, 1)
        if not _shape_matches(array.shape[1:], expected):
            raise PredictionError.during(
                library, _shape_message(expected, array.shape[1:]), instance_index=0
            )
    if np.dtype(dtype).kind in "iu" and array.dtype.kind in "iuf" and array.dtype != dtype:
        _check_integral(array, np.dtype(dtype), library)
    if array.dtype != dtype:
        array = array.astype(dtype)
    if not allow_nan and array.dtype.kind == "f":
        finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
        if not finite.all():
            index = int(np.argmin(finite))
            raise PredictionError.during(
                library,
                "missing or non-finite value (null, NaN or infinity): this model cannot take "
                "missing values",
                instance_index=index,
            )
    return array


def _check_integral(array: np.ndarray, dtype: np.dtype[Any], library: str) -> None:
    """Refuse numbers an integer input cannot hold as they are (1.5, NaN, a negative number
    for an unsigned input, one out of range): a cast would change them without a word.

    Raises:
        PredictionError: naming the first instance holding such a number.
    """
    limits = np.iinfo(dtype)
    with np.errstate(invalid="ignore"):
        fits = (
            np.isfinite(array)
            & (np.floor(array) == array)
            & (array >= limits.min)
            & (array <= limits.max)
        )
    per_instance = fits.reshape(len(array), -1).all(axis=1) if len(array) else fits
    if not per_instance.all():
        index = int(np.argmin(per_instance))
        bad = array.reshape(len(array), -1)[index][~fits.reshape(len(array), -1)[index]][0]
        raise PredictionError.during(
            library,
            f"the model takes {dtype.name} numbers here; got {float(bad)!r}",
            instance_index=index,
        )


def _explain(
    instances: Iterable[Any],
    library: str,
    expected: tuple[int | None, ...] | None,
    allow_nan: bool,
) -> None:
    """Raise a PredictionError that names the first bad instance, if one is bad."""
    reference = expected
    for index, instance in enumerate(instances):
        try:
            shape = _numeric_shape(instance, allow_nan)
        except _BadInstance as problem:
            raise PredictionError.during(library, str(problem), instance_index=index) from None
        if reference is None:
            reference = shape
        elif not _shape_matches(shape, reference) and not (reference == (1,) and shape == ()):
            raise PredictionError.during(
                library, _shape_message(reference, shape), instance_index=index
            )


def _numeric_shape(value: Any, allow_nan: bool) -> tuple[int, ...]:
    if isinstance(value, (list, tuple, np.ndarray)):
        shapes = [_numeric_shape(item, allow_nan) for item in value]
        if any(shape != shapes[0] for shape in shapes[1:]):
            raise _BadInstance("nested lists of different lengths")
        return (len(shapes), *(shapes[0] if shapes else ()))
    if is_missing(value):
        if not allow_nan:
            shown = "null" if value is None else _short(value)
            raise _BadInstance(f"missing value ({shown}): this model cannot take missing values")
        return ()
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return ()
    if isinstance(value, Mapping):
        raise _BadInstance(
            f"expected a list of numbers, got an object with keys {sorted(map(str, value))}"
        )
    raise _BadInstance(f"value {_short(value)} is not a number")


def _shape_matches(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(shape) == len(expected) and all(
        want is None or want == got for got, want in zip(shape, expected, strict=True)
    )


def _shape_message(expected: Sequence[int | None], got: Sequence[int]) -> str:
    if len(expected) == 1 and expected[0] is not None:
        if len(got) == 1:
            return f"expected {expected[0]} features, got {got[0]}"
        if not got:
            return f"expected a list of {expected[0]} numbers, got a single number"
    want = [("any" if size is None else size) for size in expected]
    return f"expected shape {want}, got {list(got)}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def named_columns(
    instances: Sequence[Any], names: Sequence[str], library: str, *, strict: bool = False
) -> dict[str, list[Any]]:
    """Columns of dict instances: ``{name: [value of each instance]}`` for each of `names`.

    Keys other than `names` are ignored, or refused with `strict` (a model's named tensors:
    TF Serving refuses an input the signature does not have).

    Raises:
        PredictionError: an instance is not an object, lacks one of `names`, or (`strict`)
            has another key.
    """
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if not isinstance(instance, Mapping):
            raise PredictionError.during(
                library,
                f"expected an object with the model's inputs {list(names)}, got {_short(instance)}",
                instance_index=index,
            )
        for name in names:
            if name not in instance:
                raise PredictionError.during(
                    library, f"missing input {name!r}", instance_index=index
                )
            columns[name].append(instance[name])
        if strict and len(instance) > len(names):
            unknown = sorted(str(key) for key in instance if key not in columns)
            raise PredictionError.during(
                library,
                f"unknown input {unknown[0]!r} (the model's inputs are {list(names)})",
                instance_index=index,
            )
    return columns


def to_jsonable(value: Any) -> Any:
    """`value` made of plain Python lists, dicts, str, numbers, bools and None.

    Bytes become text when they are UTF-8, else ``{"b64": ...}`` (AI Platform's binary form).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return value.tolist()
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if hasattr(value, "toarray"):  # scipy sparse
        return to_jsonable(np.asarray(value.toarray()))
    if hasattr(value, "to_numpy"):  # pandas
        return to_jsonable(value.to_numpy())
    return value


def per_instance(outputs: Any, count: int, library: str) -> list[Any]:
    """One JSON-ready output per instance from a model's batch output.

    An array (or a list of rows) gives its rows. A mapping of arrays, or a tuple of arrays
    (named ``output_0``, ``output_1``...), gives one object per instance keyed by output name;
    with a single entry it gives that entry's rows.

    Raises:
        PredictionError: the model returned a number of rows other than `count`.
    """
    if isinstance(outputs, (Mapping, tuple)):
        named = (
            {str(name): item for name, item in outputs.items()}
            if isinstance(outputs, Mapping)
            else {f"output_{i}": item for i, item in enumerate(outputs)}
        )
        if len(named) == 1:
            return per_instance(next(iter(named.values())), count, library)
        columns = {name: per_instance(item, count, library) for name, item in named.items()}
        return [{name: column[i] for name, column in columns.items()} for i in range(count)]
    rows = to_jsonable(outputs)
    if not isinstance(rows, list) or len(rows) != count:
        got = len(rows) if isinstance(rows, list) else "a single value"
        raise PredictionError.during(
            library, f"the model returned {got} outputs for {count} instances"
        )
    return rows


@dataclasses.dataclass(frozen=True)
class TensorInput:
    """One input of a model: its name, the shape of one instance (None along an axis where any
    size goes, or None altogether when unknown) and its numpy dtype (``object`` for strings)."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: Any = np.float32


@dataclasses.dataclass(frozen=True)
class TensorSignature:
    """The tensors a model declares: its inputs, the names of the outputs its predictions
    hold, in order (empty when the names are unknown), and those outputs' numpy dtypes
    (parallel to `outputs`, None where unknown; empty when none is known)."""

    inputs: tuple[TensorInput, ...]
    outputs: tuple[str, ...] = ()
    output_dtypes: tuple[Any, ...] = ()

    def output_dtype(self, name: str) -> Any:
        """The numpy dtype of output `name`, or None when unknown."""
        if name in self.outputs and len(self.output_dtypes) == len(self.outputs):
            return self.output_dtypes[self.outputs.index(name)]
        return None


def input_arrays(
    instances: Sequence[Any] | np.ndarray, inputs: Sequence[TensorInput], library: str
) -> dict[str, np.ndarray]:
    """The instances as one array per model input.

    With one input, instances are its values (or objects holding it under its name); with
    several, objects keyed by input name (a key that names no input is refused, as TF Serving
    does). Numeric inputs are checked by `numeric_batch`
    (no missing values); string inputs take strings or bytes.

    Raises:
        PredictionError: naming the first malformed instance.
    """
    if len(inputs) == 1:
        spec = inputs[0]
        if isinstance(instances, np.ndarray) or not all(
            isinstance(item, Mapping) for item in instances
        ):
            return {spec.name: _input_array(instances, spec, library)}
        instances = named_columns(instances, [spec.name], library, strict=True)[spec.name]
        return {spec.name: _input_array(instances, spec, library)}
    if isinstance(instances, np.ndarray):
        raise PredictionError.during(
            library, f"the model has several inputs {[spec.name for spec in inputs]}: send objects"
        )
    columns = named_columns(instances, [spec.name for spec in inputs], library, strict=True)
    return {spec.name: _input_array(columns[spec.name], spec, library) for spec in inputs}


def _input_array(values: Sequence[Any] | np.ndarray, spec: TensorInput, library: str) -> np.ndarray:
    if np.dtype(spec.dtype).kind not in "OSU":
        return numeric_batch(values, library, instance_shape=spec.shape, dtype=spec.dtype)
    for index, value in enumerate(values):
        if not _all_strings(value):
            raise PredictionError.during(
                library,
                f"input {spec.name!r} takes strings, got {_short(value)}",
                instance_index=index,
            )
    array: np.ndarray
    try:
        array = np.array(list(values), dtype=object)
    except ValueError as error:
        raise PredictionError.during(library, f"input {spec.name!r}: {error}") from None
    if spec.shape is not None:
        if array.ndim == 1 and spec.shape == (1,):
            array = array.reshape(-1, 1)
        if not _shape_matches(array.shape[1:], spec.shape):
            raise PredictionError.during(
                library, _shape_message(spec.shape, array.shape[1:]), instance_index=0
            )
    return array


def _all_strings(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_all_strings(item) for item in value)
    return isinstance(value, (str, bytes))


def inputs_example(inputs: Sequence[TensorInput]) -> list[Any] | None:
    """One instance of zeros (empty strings for string inputs) for `inputs`, or None when a
    size is unknown: a value for one input, an object keyed by input name for several."""
    values: dict[str, Any] = {}
    for spec in inputs:
        if spec.shape is None or any(size is None or size < 0 for size in spec.shape):
            return None
        shape = [int(size) for size in spec.shape if size is not None]
        if np.dtype(spec.dtype).kind in "OSU":
            values[spec.name] = np.full(shape, "", dtype=np.object_).tolist()
        else:
            values[spec.name] = np.zeros(shape).tolist()
    if not values:
        return None
    return [next(iter(values.values()))] if len(values) == 1 else [values]


def checked_example(predictor: Predictor, example: list[Any] | None) -> list[Any] | None:
    """`example` if `predictor` answers it, else None: a derived example is only a guess."""
    if example is None:
        return None
    try:
        predictor.predict(example)
    except Exception:
        return None
    return example
