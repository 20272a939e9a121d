"""The data of a run: IDX files or class folders, checked against the params before training.

``--data_dir`` is either MNIST's IDX layout (:mod:`model.mnist_dataset`, held in memory)
or class folders (:mod:`model.image_folder`, decoded on the fly); :func:`load` tells them
apart by a ``train/`` folder. Either way a split is ``(images, labels)``: ``images`` is a
uint8 array [N, S, S] or [N, S, S, C] (IDX, or a decoded cache) or an
:class:`~model.image_folder.ImageFiles`, and :mod:`model.pipelines` makes batches of any.

``dataset.json`` in the model_dir records what a run trains on: the layout, the data
folder, the class names (the metadata of every picture) and, for class folders, the
checked file lists, so that a resumed run reads exactly the files the run began with,
whatever was added to the folders since. ``params.cache`` keeps decoded class-folder
images in memory or in ``MODEL_DIR/cache/`` (a uint8 ``.npy`` read by memory mapping,
beside the SHA-256 of its pixels, checked when it is read).
"""

import dataclasses
import hashlib
import json
import logging
import os
from typing import Optional

import numpy as np

from tftriplet import verification
from . import class_splits, files, image_folder, mnist_dataset, pipelines, run_folder
from .errors import UserError
from .image_folder import ImageFiles


@dataclasses.dataclass
class Data:
    """A run's splits, class names and params with ``num_labels`` resolved."""

    params: object
    record: dict
    train: Optional[tuple] = None
    test: Optional[tuple] = None
    # Held out of train: params.validation_size images or validation_classes (for_training).
    validation: Optional[tuple] = None

    @property
    def class_names(self):
        return self.record["class_names"]


def load(params, data_dir, model_dir=None, splits=("train", "test")):
    """The splits of ``data_dir`` as the run in ``model_dir`` reads them.

    A class-folder dataset already recorded in ``model_dir/dataset.json`` for the same
    folder is read from that record (not scanned again).

    Returns:
        :class:`Data` with only the classes of ``params.train_classes`` /
        ``test_classes`` (:func:`model.class_splits.select`); ``params.num_labels`` is
        filled in from the data when null.

    Raises:
        UserError: missing, unreadable or inconsistent data, a ``num_labels`` that
            disagrees with the data, or class lists the data does not match.
    """
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"--data_dir {data_dir} is a file, not a folder; pass the folder that "
                        "holds the IDX files or the train/ and test/ class folders")
    if image_folder.is_folder_dataset(data_dir):
        data = _load_folders(params, data_dir, model_dir, splits)
    else:
        data = _load_idx(params, data_dir, splits)
    return class_splits.select(data)


def _load_idx(params, data_dir, splits):
    loaded = {split: mnist_dataset.load_split(data_dir, split) for split in splits}
    for split, (images, labels) in loaded.items():
        check_shapes(images, labels, params, split,
                              mnist_dataset.split_path(data_dir, split, "images"))
    found = max(max(int(labels.max()) + 1 for _, labels in loaded.values()), 2)
    if params.num_labels is not None and params.num_labels > mnist_dataset.MAX_LABELS:
        # Checked before the class names are listed: a billion of them would take 7 GB.
        raise UserError(f"num_labels is {params.num_labels} but IDX label files hold labels "
                        f"0-{mnist_dataset.MAX_LABELS - 1}; set \"num_labels\": {found} (or "
                        "null to take it from the data)")
    if "train" in loaded:
        if params.num_labels is None:
            params = _with_num_labels(params, found,
                                      mnist_dataset.split_path(data_dir, "train", "labels"))
        for split, (_, labels) in loaded.items():
            _check_label_range(labels, params,
                               mnist_dataset.split_path(data_dir, split, "labels"))
    record = {"layout": "idx", "data_dir": os.path.abspath(data_dir),
              "class_names": [str(label) for label in range(params.num_labels or found)]}
    return Data(params, record, loaded.get("train"), loaded.get("test"))


def _with_num_labels(params, count, source):
    """``params`` with ``num_labels`` = ``count``, the classes found in ``source``."""
    from .params import params_from_dict

    return params_from_dict({**params.to_dict(), "num_labels": count},
                            source=f"params.json with num_labels {count} from {source}")


def _check_label_range(labels, params, path):
    if labels.size and (labels.min() < 0 or labels.max() >= params.num_labels):
        bad = int(labels.max()) if labels.max() >= params.num_labels else int(labels.min())
        raise UserError(f"{path}: label {bad} is outside [0, num_labels = {params.num_labels}); "
                        f'set "num_labels": {int(labels.max()) + 1} in params.json (or null to '
                        "take it from the data), or fix the labels")


def _load_folders(params, data_dir, model_dir, splits):
    # What the scan depends on besides the files: a record made otherwise is not reused.
    scan = {"layout": "folders", "data_dir": os.path.abspath(data_dir), "seed": params.seed,
            "test_fraction": params.test_fraction}
    record = read_record(model_dir)
    if not (record and all(record.get(key) == value for key, value in scan.items())
            and all(split in record for split in splits)):
        scanned = image_folder.load(data_dir, params, splits)
        record = {**scan, "held_out": scanned["held_out"],
                  "class_names": scanned["class_names"]}
        for split in splits:
            paths, labels = scanned[split]
            record[split] = {"files": paths, "labels": labels.tolist()}
    if "train" in splits:
        num_classes = len(set(record["train"]["labels"]))
        if num_classes < 2:
            raise UserError(f"{os.path.join(data_dir, image_folder.TRAIN_DIR)} holds a single "
                            "class; a triplet needs a negative of another class: add class "
                            "folders")
        if params.num_labels is None:
            params = _with_num_labels(params, num_classes,
                                      os.path.join(data_dir, image_folder.TRAIN_DIR))
        elif params.num_labels != num_classes:
            raise UserError(f"params.json sets num_labels {params.num_labels} but "
                            f"{os.path.join(data_dir, image_folder.TRAIN_DIR)} holds "
                            f"{num_classes} class folders with images; set \"num_labels\": "
                            f"{num_classes}, or null to take it from the data")
    data = Data(params, record)
    for split in splits:
        entry = record[split]
        images = image_folder.files(data_dir, entry["files"], params)
        setattr(data, split, (images, np.asarray(entry["labels"], np.int64)))
    return data


def read_record(model_dir):
    """The ``dataset.json`` of ``model_dir``, or None."""
    return files.read_json(os.path.join(model_dir, run_folder.DATASET_FILE)) if model_dir else None


def save_record(data, model_dir):
    """Write ``dataset.json`` (atomically) unless it already holds the same record."""
    path = os.path.join(model_dir, run_folder.DATASET_FILE)
    if read_record(model_dir) != data.record:
        files.write_text(path, json.dumps(data.record, indent=1) + "\n")


def for_training(params, data_dir, model_dir):
    """The train and test splits of a run, checked before anything trains.

    Raises:
        UserError: as :func:`load`; data the params cannot train on (balanced batches
            that cannot be built, too few images), or a test set on which the
            verification threshold cannot be calibrated.
    """
    data = hold_out_validation(class_splits.hold_out_classes(load(params, data_dir, model_dir)))
    params = data.params
    check_data(*data.train, params, data.class_names)
    eval_labels = data.test[1][:params.eval_size]
    try:
        verification.check_calibration(eval_labels, seed=params.seed)
    except verification.CalibrationError as err:
        raise UserError(f"{err}: the first eval_size = {min(params.eval_size, len(data.test[1]))} "
                        "test images cannot calibrate the verification threshold; raise "
                        "eval_size or use a test set with more classes") from None
    return data


def hold_out_validation(data):
    """``data`` with ``params.validation_size`` train images moved to ``data.validation``.

    A seeded random sample (its own random stream), in their stored order, as the rest.

    Raises:
        UserError: a validation split that would leave fewer than 2 train images.
    """
    size = data.params.validation_size
    if not size:
        return data
    images, labels = data.train
    if size > len(labels) - 2:
        raise UserError(f"validation_size is {size} but the train split holds {len(labels)} "
                        f"images; lower it to at most {len(labels) - 2}")
    # pipelines.epoch_rng draws from [seed, epoch] and image_folder from [seed, 0, 1|2].
    chosen = np.zeros(len(labels), bool)
    chosen[np.random.default_rng([data.params.seed, 0, 3]).permutation(len(labels))[:size]] = True
    return dataclasses.replace(data, train=(images[~chosen], labels[~chosen]),
                               validation=(images[chosen], labels[chosen]))


def cached(data, folder):
    """``data`` with its class-folder images decoded once, as ``params.cache`` says.

    "memory" holds uint8 arrays; "file" writes ``folder/<split>-<key>.npy`` (atomically,
    the key naming the files and the decoding settings; ``MODEL_DIR/cache`` for a run)
    and its checksum ``<split>-<key>.json``, and maps it, so memory does not grow with the
    dataset. IDX data and ``cache`` null come
    back as they are.
    """
    mode = data.params.cache
    if mode is None or data.record["layout"] != "folders":
        return data
    out = dataclasses.replace(data)
    for split in ("train", "validation", "test"):
        if getattr(data, split) is None:
            continue
        images, labels = getattr(data, split)
        if mode == "memory":
            decoded = pipelines.decode_all(images, data.params)
        else:
            decoded = _file_cache(images, data.params, folder, split)
        setattr(out, split, (decoded, labels))
    return out


def _file_cache(images, params, folder, split):
    """The decoded ``images`` of ``split``, mapped from ``folder``'s cache; (re)built when it
    is missing, damaged, or does not match the checksum written with it."""
    key = hashlib.sha256(json.dumps(
        [list(images.paths), images.size, images.channels, images.resize]).encode()).hexdigest()
    path = os.path.join(folder, f"{split}-{key[:16]}.npy")
    checksum_path = path[:-len(".npy")] + ".json"
    if os.path.isfile(path):
        mapped, problem = _read_cache(path, checksum_path, images.shape)
        if problem is None:
            return mapped
        logging.warning("Rebuilding the cache %s: %s", path, problem)
    os.makedirs(folder, exist_ok=True)
    for stale in os.listdir(folder):
        if stale.startswith(f"{split}-") and stale.endswith((".npy", ".json")):
            os.remove(os.path.join(folder, stale))
    with files.replaced_atomically(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=images.shape)
        pipelines.decode_all(images, params, out=out)
        out.flush()
        checksum = _checksum(out)
        del out
    # Written after the pixels: a run stopped in between leaves a cache without a checksum,
    # which the next one rebuilds.
    files.write_json(checksum_path, {"sha256": checksum})
    logging.info("Cached the %d decoded %s images in %s", len(images), split, path)
    return np.load(path, mmap_mode="r")


def _read_cache(path, checksum_path, shape):
    """(the cache ``path`` mapped, None) when it holds uint8 pixels of ``shape`` that match
    the checksum in ``checksum_path``; else (None, what is wrong with it).

    The .npy header tells only the shape: pixels damaged on disk (a bad sector, a stray
    write) would otherwise be trained on in silence, with other weights.
    """
    try:
        mapped = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None, "it is damaged (its header does not read)"
    if mapped.shape != shape or mapped.dtype != np.uint8:
        return None, f"it is damaged (it holds {mapped.dtype} {mapped.shape}, not uint8 {shape})"
    recorded = (files.read_json(checksum_path) or {}).get("sha256")
    if recorded is None:
        return None, ("it has no checksum (written before caches had one, or by a run stopped "
                      "while writing it)")
    if recorded != _checksum(mapped):
        return None, "it is damaged (its pixels do not match the checksum written with them)"
    return mapped, None


def _checksum(pixels):
    """The SHA-256 of a uint8 array's bytes, in hex.

    Measured on a 2-core x86-64 with SHA extensions for 60000 x 28 x 28 (MNIST's 47 MB,
    in the page cache): 0.03 s, 0.1 s on a fresh mapping (CRC-32: 0.012 s, too little
    gained for a weaker check). Once per run: less than an epoch spends reading them.
    """
    return hashlib.sha256(memoryview(np.ascontiguousarray(pixels)).cast("B")).hexdigest()


def check_data(images, labels, params, class_names=None):
    """Reject data the params cannot train on, before any training starts.

    Args:
        images: uint8 [N, S, S] or [N, S, S, C], or :class:`~model.image_folder.ImageFiles`.
        labels: int [N].
        params: :class:`model.params.Params`.
        class_names: the name of each label, used in the messages (default: the label).

    Raises:
        UserError: no images, image size != ``params.image_size``, images and labels
            of different lengths, or balanced batches that cannot be built (fewer
            classes present than P, or a class with fewer than K images).
    """
    check_shapes(images, labels, params)
    if not params.balanced_batches:
        return
    p, k = params.num_classes_per_batch, params.num_images_per_class
    classes, counts = np.unique(labels, return_counts=True)
    if p > len(classes):
        raise UserError(
            f"num_classes_per_batch is {p} but the data holds only {len(classes)} "
            f"classes; set num_classes_per_batch to at most {len(classes)}")
    small = classes[counts < k]
    if small.size:
        fewest = int(counts.min())
        name = class_names[small[0]] if class_names is not None else small[0]
        raise UserError(
            f"num_images_per_class is {k} but {small.size} class(es) have fewer images "
            f"(class {name} has {int(counts[classes == small[0]][0])}, the smallest "
            f"{fewest}); set num_images_per_class to at most {fewest} or remove those classes")


def check_shapes(images, labels, params, split="train", path=None):
    """Raise UserError unless there are images of the params' size, one label each.

    Arrays must be [N, S, S] or [N, S, S, C] with S = params.image_size (IDX data is not
    resized); :class:`~model.image_folder.ImageFiles` are resized when decoded.

    Args:
        split: "train" or "test", named in the messages (the train split is checked first,
            so a test split of another size is told to match the train images).
        path: the images file, named in the messages when given.
    """
    size = params.image_size
    where = f"the {split} images" + (f" ({path})" if path else "")
    if isinstance(images, ImageFiles):
        if not len(images):
            raise UserError(f"{where}: no image files; add images to the class folders")
    elif images.ndim not in (3, 4) or len(images) == 0:
        raise UserError(f"{where}: expected a non-empty stack of 2-D images [N, rows, cols], "
                        f"got shape {images.shape}; check that file")
    elif images.shape[1:3] != (size, size):
        rows, cols = images.shape[1:3]
        if split != "train":
            fix = f"resize them to {size} x {size}, the size of the train images"
        elif rows == cols:
            fix = f'set "image_size": {rows} in params.json'
        else:
            fix = "resize them to square images"
        raise UserError(f"{where} are {rows} x {cols} pixels but params.image_size is "
                        f"{size}; {fix}")
    if labels.shape != (len(images),):
        raise UserError(f"{where}: {len(images)} images but labels of shape {labels.shape}; "
                        "give one integer label per image")
