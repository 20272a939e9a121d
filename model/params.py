"""The params of an experiment: one schema, one validator.

Every experiment folder holds a ``params.json``. Each key of :class:`Params` carries, in
one place, its type (the annotation), its default, its allowed range or choices and a
one-line help (the field's metadata, see :func:`_key`); :func:`params_from_dict` reads
all of them. Unknown keys (with a did-you-mean), wrong types, non-finite numbers,
out-of-range values and duplicate keys are rejected; keys that older files do not have
take their defaults, so the JSON files of the original TF1 project keep working
unchanged. The params table of docs/params.md lists the same keys and defaults (a test checks it).

Over 300 lines on purpose: the schema is one table of every key (type, default, bounds,
help) that the validator, ``--help`` texts and the docs test all read, and splitting it
would scatter the one place a new key is declared.
"""

import dataclasses
import difflib
import json
import math
import os
import platform
import sys
import typing
from typing import Optional

from .errors import UserError, check_utf8
from .files import read_json, write_json

STRATEGIES = ("batch_all", "batch_hard", "batch_semihard", "contrastive")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
# The names of tftriplet.distances.METRICS (TensorFlow Addons' distance_metric names).
DISTANCES = ("L2", "squared-L2", "angular")
# model.images.RESIZE_MODES (not imported: this module loads without TensorFlow).
RESIZE_MODES = ("pad", "crop", "stretch")
CACHE_MODES = ("memory", "file")
LR_SCHEDULES = ("constant", "cosine")
PARAMS_FILENAME = "params.json"
RESOLVED_PARAMS_FILENAME = "params_resolved.json"
# The largest batch the losses take (in blocks of anchors above B = 4,096, with int32
# indices to spare): the library's tftriplet.blocked.MAX_BATCH, repeated so that params
# load without TensorFlow (tests/test_params.py checks that they agree). What a machine
# can hold is checked when a run starts (model/memory.py), with the estimate in the error.
MAX_BATCH = 2**24


class ClassList(list):
    """The annotation of a key naming classes: a non-empty JSON list of distinct class
    labels (integers >= 0, IDX data) or names (strings, class folders)."""


class ClassListOrCount(list):
    """The annotation of a key naming classes or how many to draw: a
    :class:`ClassList`, or an integer >= 2."""


def _key(default, help, *, at_least=None, above=None, at_most=None, choices=None):
    """A params key: its default, one-line help, and allowed values (bounds are inclusive
    except ``above``)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "at_least": at_least, "above": above, "at_most": at_most,
        "choices": choices})


@dataclasses.dataclass(frozen=True)
class Params:
    """All hyper-parameters of one experiment (the keys of ``params.json``)."""

    # Optimisation.
    learning_rate: float = _key(1e-3, "Adam's learning rate (default betas)", above=0.0)
    learning_rate_schedule: str = _key("constant", "constant, or cosine: decayed to 0 over "
                                                   "num_epochs", choices=LR_SCHEDULES)
    batch_size: int = _key(64, "training batch size (the global batch under a strategy)",
                           at_least=1, at_most=MAX_BATCH)
    num_epochs: int = _key(20, "epochs to train; raise it and run again to train longer",
                           at_least=1, at_most=10**6)
    # Network.
    num_channels: int = _key(32, "filters of the first conv block (each next block has twice "
                                 "as many)", at_least=1, at_most=4096)
    num_conv_blocks: int = _key(2, "conv blocks (3x3 conv, ReLU, 2x2 max-pool); 3-4 for 64-128 "
                                   "px images", at_least=1, at_most=8)
    use_batch_norm: bool = _key(False, "batch norm after each conv")
    bn_momentum: float = _key(0.9, "batch-norm moving-average momentum", at_least=0.0,
                              at_most=1.0)
    embedding_size: int = _key(64, "size of the embedding", at_least=1, at_most=65536)
    l2_normalize: bool = _key(False, "project the embeddings onto the unit sphere")
    # Loss.
    triplet_strategy: str = _key("batch_all", "how triplets are mined in a batch",
                                 choices=STRATEGIES)
    margin: float = _key(0.5, "the triplet margin (unused with soft_margin)", at_least=0.0)
    squared: bool = _key(False, "squared Euclidean distances instead of Euclidean")
    distance: Optional[str] = _key(None, "L2, squared-L2 or angular; null: L2, or squared-L2 "
                                         "with squared", choices=DISTANCES)
    soft_margin: bool = _key(False, "softplus(d(a,p) - d(a,n)) instead of the hinge")
    # Data.
    image_size: int = _key(28, "image height and width (IDX data must have it; images of "
                               "class folders are resized to it)", at_least=1, at_most=4096)
    image_channels: int = _key(1, "1 (grey) or 3 (RGB): images are converted to it",
                               at_least=1, at_most=3)
    resize: str = _key("pad", "how class-folder images become square: pad, crop or stretch",
                       choices=RESIZE_MODES)
    num_labels: Optional[int] = _key(None, "number of train classes; null: from the data",
                                     at_least=2, at_most=2**31 - 1)
    test_fraction: float = _key(0.2, "share of each class held out as the test split when "
                                     "the class folders have no test/", above=0.0,
                                at_most=0.9)
    cache: Optional[str] = _key(None, "keep decoded class-folder images in memory or in "
                                      "MODEL_DIR/cache/; null: decode every epoch",
                                choices=CACHE_MODES)
    train_size: int = _key(50000, "shuffle buffer of the training set", at_least=1,
                           at_most=2**31 - 1)
    eval_size: int = _key(10000, "evaluate on the first eval_size test images", at_least=1,
                          at_most=2**31 - 1)
    validation_size: int = _key(0, "train images held out (seeded) to evaluate each epoch and "
                                   "pick best/ on; 0: the test set, as the original",
                                at_least=0, at_most=2**31 - 1)
    # Class-disjoint splits (the open-set protocol: model.class_splits).
    train_classes: Optional[ClassList] = _key(None, "the classes to train on (labels of IDX "
                                                    "data, or class-folder names); null: all")
    test_classes: Optional[ClassList] = _key(None, "the classes to test on, none of them in "
                                                   "train_classes; null: all")
    validation_classes: Optional[ClassListOrCount] = _key(
        None, "training classes held out to evaluate each epoch and pick best/ on: a number "
              "drawn with the seed, or a list; null: none")
    num_parallel_calls: int = _key(4, "parallel batch-decoding calls of the input pipeline",
                                   at_least=1, at_most=1024)
    num_classes_per_batch: Optional[int] = _key(None, "P of balanced P x K batches",
                                                at_least=2, at_most=MAX_BATCH)
    num_images_per_class: Optional[int] = _key(None, "K of balanced P x K batches",
                                               at_least=2, at_most=MAX_BATCH)
    # Augmentation of the training batches (all off by default, as in the original).
    augment_translate: int = _key(0, "random shift of up to this many pixels", at_least=0,
                                  at_most=4096)
    augment_crop: float = _key(1.0, "random square crop of side [augment_crop, 1] x the "
                                    "image, resized back; 1: off", above=0.0, at_most=1.0)
    augment_flip: bool = _key(False, "random left-right flips")
    augment_brightness: float = _key(0.0, "random brightness delta in [-b, b]", at_least=0.0,
                                     at_most=1.0)
    augment_contrast: float = _key(0.0, "random contrast factor in [1 - c, 1 + c]",
                                   at_least=0.0, at_most=1.0)
    # Run.
    seed: int = _key(230, "seeds everything: weights, data order, every epoch's shuffle",
                     at_least=0, at_most=2**31 - 1)
    save_summary_steps: int = _key(50, "write training summaries every this many steps",
                                   at_least=1,
                                   at_most=2**31 - 1)
    keep_checkpoint_max: int = _key(5, "epoch checkpoints kept in checkpoints/", at_least=1,
                                    at_most=1000)
    distribution: str = _key("none", "tf.distribute strategy", choices=DISTRIBUTIONS)
    mixed_precision: bool = _key(False, "mixed_float16 on GPU, mixed_bfloat16 on CPU")

    @property
    def balanced_batches(self):
        return self.num_classes_per_batch is not None

    @property
    def distance_metric(self):
        """The name of the training distance in :data:`tftriplet.distances.METRICS`."""
        return self.distance or ("squared-L2" if self.squared else "L2")

    def to_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        """A copy with ``changes`` applied, validated like a loaded file."""
        return params_from_dict({**self.to_dict(), **changes}, source="Params.replace")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_class_list(value):
    return (isinstance(value, list) and len(value) > 0
            and all((_is_int(entry) and entry >= 0) or (isinstance(entry, str) and entry)
                    for entry in value)
            and len({json.dumps(entry) for entry in value}) == len(value))


# Annotation -> (test of a JSON value, what the message says it must be).
_BASE_TYPES = {
    int: (_is_int, "an integer"),
    float: (_is_number, "a number"),
    bool: (lambda value: isinstance(value, bool), "true or false"),
    str: (lambda value: isinstance(value, str), "a string"),
    ClassList: (_is_class_list, "a non-empty list of distinct class labels (integers >= 0) "
                                "or names (strings)"),
    ClassListOrCount: (lambda value: (_is_int(value) and value >= 2) or _is_class_list(value),
                       "a number of classes (>= 2: fewer cannot be evaluated) or a list of "
                       "distinct class labels or names"),
}


def _base_type(annotation):
    """(base type, optional) of a supported annotation: a base type or Optional of one.

    Raises:
        TypeError: for any other annotation, so a new key cannot be declared with a type
            the validator does not check.
    """
    if annotation in _BASE_TYPES:
        return annotation, False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and len(args) == 2 and type(None) in args:
        base = args[0] if args[1] is type(None) else args[1]
        if base in _BASE_TYPES:
            return base, True
    raise TypeError(f"unsupported params annotation {annotation!r}; use int, float, bool, "
                    "str or Optional of one of them")


def check_schema(cls):
    """Check that every field of the params dataclass ``cls`` can be validated.

    Raises:
        TypeError: a field with an unsupported annotation, bounds on a non-number,
            choices on a non-string, or a default its own checks reject.
    """
    for field in dataclasses.fields(cls):
        try:
            base, _ = _base_type(field.type)
        except TypeError as err:
            raise TypeError(f"{cls.__name__}.{field.name}: {err}") from None
        meta = field.metadata
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{field.name}: declare it with _key(...)")
        bounded = any(meta[name] is not None for name in ("at_least", "above", "at_most"))
        if bounded and base not in (int, float):
            raise TypeError(f"{cls.__name__}.{field.name}: bounds on a {base.__name__}")
        if meta["choices"] is not None and base is not str:
            raise TypeError(f"{cls.__name__}.{field.name}: choices on a {base.__name__}")
        _check_value(field, field.default, f"{cls.__name__} default")


def _json(value):
    return json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)


def _type_name(value):
    return "null" if value is None else type(value).__name__


def _check_value(field, value, source):
    """``value`` checked against ``field``'s type, range and choices (ints become floats
    where a float is expected)."""
    key = field.name
    base, optional = _base_type(field.type)
    if optional and value is None:
        return value
    test, wanted = _BASE_TYPES[base]
    if not test(value):
        wanted += " or null" if optional else ""
        raise UserError(f"{source}: '{key}' must be {wanted}, got {_json(value)} "
                        f"({_type_name(value)}); fix the value in the file")
    if base is float:
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise UserError(f"{source}: '{key}' is {value}; it must be a finite number")
    meta = field.metadata
    if meta["choices"] is not None and value not in meta["choices"]:
        raise UserError(f"{source}: '{key}' is {_json(value)}; choose one of "
                        f"{', '.join(meta['choices'])}")
    low, above, high = meta["at_least"], meta["above"], meta["at_most"]
    if ((low is not None and value < low) or (above is not None and value <= above)
            or (high is not None and value > high)):
        bound = " and ".join(text for text, limit in (
            (f">= {low}", low), (f"> {above}", above), (f"<= {high}", high)) if limit is not None)
        raise UserError(f"{source}: '{key}' is {value}; it must be {bound}")
    return value


def _check_consistency(params, source):
    p, k = params.num_classes_per_batch, params.num_images_per_class
    if (p is None) != (k is None):
        raise UserError(
            f"{source}: balanced batches need both 'num_classes_per_batch' and "
            "'num_images_per_class' (or neither); set the missing one")
    if p is not None and p * k != params.batch_size:
        raise UserError(
            f"{source}: 'batch_size' is {params.batch_size} but num_classes_per_batch x "
            f"num_images_per_class = {p} x {k} = {p * k}; make batch_size {p * k}")
    if p is not None and params.num_labels is not None and p > params.num_labels:
        raise UserError(
            f"{source}: 'num_classes_per_batch' is {p} but there are only "
            f"num_labels = {params.num_labels} classes; lower it")
    if params.image_channels == 2:
        raise UserError(f"{source}: 'image_channels' is 2; use 1 (grey) or 3 (RGB)")
    if params.image_size < 2 ** params.num_conv_blocks:
        raise UserError(
            f"{source}: {params.num_conv_blocks} conv blocks halve the image "
            f"{params.num_conv_blocks} times, more than image_size {params.image_size} allows; "
            f"lower num_conv_blocks or raise image_size to at least {2 ** params.num_conv_blocks}")
    if params.augment_translate >= params.image_size:
        raise UserError(
            f"{source}: 'augment_translate' is {params.augment_translate} pixels, the whole "
            f"image (image_size {params.image_size}); use a few pixels")
    if params.squared and params.distance not in (None, "squared-L2"):
        raise UserError(
            f"{source}: 'squared' is true but 'distance' is {json.dumps(params.distance)}; "
            'use "distance": "squared-L2" alone, or set squared to false')
    if params.validation_classes is not None and params.validation_size:
        raise UserError(
            f"{source}: 'validation_classes' and 'validation_size' both hold out a "
            "validation split; keep one of them (the other null / 0)")
    if params.soft_margin and params.triplet_strategy in ("batch_semihard", "contrastive"):
        why = ("its negatives are chosen by the margin" if params.triplet_strategy ==
               "batch_semihard" else "its pairs of different classes are pushed to the margin")
        raise UserError(
            f"{source}: 'soft_margin' works with batch_all and batch_hard, not "
            f"{params.triplet_strategy} ({why}); set it to false")


check_schema(Params)
FIELDS = {field.name: field for field in dataclasses.fields(Params)}


def params_from_dict(values, source="params"):
    """Validate a dict of params (as read from JSON) and fill the defaults.

    Raises:
        UserError: on an unknown key, a wrong type or an out-of-range value.
    """
    if not isinstance(values, dict):
        raise UserError(
            f"{source}: expected a JSON object of params, got {_type_name(values)}")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(FIELDS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(
            f"{source}: unknown key '{key}'; {hint}valid keys: {', '.join(FIELDS)}")
    params = Params(**{key: _check_value(FIELDS[key], value, source)
                       for key, value in values.items()})
    _check_consistency(params, source)
    return params


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise _DuplicateKey(f"key '{duplicates[0]}' appears twice")
    return dict(pairs)


def read_params_file(path):
    """The JSON object of a params.json (a file, or a folder holding one), not yet validated.

    Returns:
        (path of the file, dict as written: only the keys the file sets).
    """
    check_utf8(path)  # the run's folder: TensorFlow writes into it
    if os.path.isdir(path):
        path = os.path.join(path, PARAMS_FILENAME)
    if not os.path.isfile(path):
        raise UserError(
            f"no params file at {path}; write {{}} there for every default, or copy the "
            "params.json of one of the project's experiments/ (e.g. base_model)")
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg}); fix the file") from None
    except _DuplicateKey as err:
        raise UserError(f"{path}: {err}; keep one of them") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (at byte offset {err.start}); save it as UTF-8 "
                        "JSON") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{path} holds a value that cannot be read ({err}); fix the "
                        "file") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be params; it must be one flat "
                        "JSON object") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err}") from None
    return path, values


def load_params(path):
    """Read and validate a params.json (a file, or an experiment folder holding one)."""
    path, values = read_params_file(path)
    return params_from_dict(values, source=path)


def save_params(params, model_dir, filename=RESOLVED_PARAMS_FILENAME):
    """Write the resolved params (defaults filled in) with the software versions and command.

    An existing file with the same params and versions is left as it is (a resume does
    not rewrite it).
    """
    import tensorflow as tf

    record = {
        "params": params.to_dict(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__},
        "command": sys.argv,
    }
    path = os.path.join(model_dir, filename)
    existing = read_json(path) or {}
    if {key: existing.get(key) for key in ("params", "versions")} != {
            key: record[key] for key in ("params", "versions")}:
        write_json(path, record)
    return path
