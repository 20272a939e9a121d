"""Images per second of the train input pipelines beside those a training step consumes.

Usage:
    python benchmarks/bench_input.py [--data_dir data/mnist] [--model_dir experiments/base_model]
                                     [--epochs 3] [--steps 50]
                                     [--folder_model_dir experiments/colour_mnist]
                                     [--folder_images 5000,50000]

Part 1, MNIST in memory. Loads the MNIST train split once, then times:

* each train pipeline (random batches with the params' shuffle buffer, and balanced
  8 classes x 8 images), batch 64: ``--epochs`` full epochs, each on a freshly built
  dataset as training does. "steady" counts the batches after the first 20 of an
  epoch (warm-up); "epoch" divides the epoch's images by the whole time including
  building the dataset (the per-epoch NumPy shuffle) and the warm-up. Medians over
  the epochs.
* one training step of the params in ``--model_dir`` (model.network's network, loss
  and Adam update) on a fixed batch of MNIST: median over ``--epochs`` runs of
  ``--steps`` steps after 5 warm-up steps (bench_train.time_train_step).

Part 2, class folders streamed from disk (skipped with ``--folder_images 0``). For each
size in ``--folder_images``, writes that many JPEGs (random sizes 48-96 px, colour, 10
classes, in a temporary folder) and times one epoch of the streaming pipeline of
``--folder_model_dir``'s params (decode, resize to its image_size, augmentation, batch
64), without and with the file cache, and the growth of the process's resident memory
while the epoch runs (anonymous memory, and file-backed pages: the mapped cache); then
the training step of those params on a batch of that size.

Prints markdown tables and the ratios pipeline / step (targets: >= 10 for MNIST in
memory, >= 3 for streamed folders; the input pipeline must not be what training waits
for) and whether memory grew with the dataset.
"""

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

WARMUP_BATCHES = 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.path.join(ROOT, "data", "mnist"),
                        help="folder with the IDX files (default: %(default)s)")
    parser.add_argument("--model_dir", default=os.path.join(ROOT, "experiments", "base_model"),
                        help="experiment whose params.json is timed (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="pipeline epochs and step runs to take the median of (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=50,
                        help="timed training steps per run (default: %(default)s)")
    parser.add_argument("--folder_model_dir",
                        default=os.path.join(ROOT, "experiments", "colour_mnist"),
                        help="experiment whose params time the folder pipeline "
                             "(default: %(default)s)")
    parser.add_argument("--folder_images", default="5000,50000",
                        help="comma-separated dataset sizes of generated JPEGs; 0 skips "
                             "part 2 (default: %(default)s)")
    return parser.parse_args(argv)


def resident_mb():
    """This process's resident memory in MB (Linux /proc): (anonymous, file-backed).

    File-backed pages (a memory-mapped cache) are page cache the kernel can drop under
    pressure; anonymous memory is what the process holds on its own.
    """
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                found[name] = int(value.split()[0]) / 1024
    return found.get("RssAnon", float("nan")), found.get("RssFile", float("nan"))


def write_jpegs(folder, count, seed=0):
    """``count`` colour JPEGs of random sizes in 10 class folders under folder/train/."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = rng.integers(48, 97, size=2)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        class_dir = os.path.join(folder, "train", f"class_{i % 10}")
        os.makedirs(class_dir, exist_ok=True)
        tf.io.write_file(os.path.join(class_dir, f"{i:06d}.jpg"),
                         tf.io.encode_jpeg(image, quality=90))


def time_folder_epoch(images, labels, params):
    """(steady images/s, whole-epoch images/s, (anonymous, file-backed) growth in MB of
    the resident memory during the epoch, at its peaks), as :func:`time_pipeline` counts."""
    from model import pipelines

    before = resident_mb()
    peaks = list(before)
    start = time.perf_counter()
    sizes = []
    for i, (batch, _) in enumerate(pipelines.train_dataset(images, labels, params, 0)):
        if i == WARMUP_BATCHES:
            warm = time.perf_counter()
        sizes.append(int(batch.shape[0]))
        if i % 20 == 0:
            peaks = [max(peak, now) for peak, now in zip(peaks, resident_mb())]
    end = time.perf_counter()
    peaks = [max(peak, now) for peak, now in zip(peaks, resident_mb())]
    return (sum(sizes[WARMUP_BATCHES:]) / (end - warm), sum(sizes) / (end - start),
            tuple(peak - base for peak, base in zip(peaks, before)))


def folder_rows(args):
    """Part 2: the rows of the folder table, and the training step's images/s."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from bench_train import time_train_step
    from model import datasets, image_folder, network
    from model.params import load_params

    params = load_params(args.folder_model_dir).replace(
        batch_size=64, num_classes_per_batch=None, num_images_per_class=None, num_labels=10)
    rows = []
    for count in [int(size) for size in args.folder_images.split(",")]:
        with tempfile.TemporaryDirectory() as root:
            write_jpegs(root, count)
            scanned = image_folder.load(root, params.replace(test_fraction=0.01), ("train",))
            paths, labels = scanned["train"]
            files = image_folder.files(root, paths, params)
            rows.append((f"{len(files):,} JPEGs, streamed",
                         *time_folder_epoch(files, labels, params)))
            data = datasets.Data(params.replace(cache="file"), {"layout": "folders"},
                                 (files, labels), (files[:1], labels[:1]))
            start = time.perf_counter()
            cached = datasets.cached(data, os.path.join(root, datasets.CACHE_DIR))
            build = time.perf_counter() - start
            rows.append((f"{len(files):,} JPEGs, file cache (built in {build:.1f} s)",
                         *time_folder_epoch(*cached.train, params)))
    rng = np.random.default_rng(0)
    batch = tf.constant(rng.random((64, *network.input_shape(params))), tf.float32)
    step = time_train_step(params, batch, tf.constant(np.arange(64) % 10, tf.int64),
                           args.epochs, args.steps)
    return params, rows, step


def time_pipeline(images, labels, params, epochs):
    """(steady images/s, whole-epoch images/s), medians over ``epochs`` epochs."""
    from model import pipelines

    steady, whole = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        sizes = []
        for i, (_, batch_labels) in enumerate(pipelines.train_dataset(images, labels, params, epoch)):
            if i == WARMUP_BATCHES:
                warm = time.perf_counter()
            sizes.append(int(batch_labels.shape[0]))
        end = time.perf_counter()
        steady.append(sum(sizes[WARMUP_BATCHES:]) / (end - warm))
        whole.append(sum(sizes) / (end - start))
    return statistics.median(steady), statistics.median(whole)


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    from model.mnist_dataset import load_split
    from model.params import load_params

    params = load_params(args.model_dir)
    images, labels = load_split(args.data_dir, "train")
    balanced = params.replace(num_classes_per_batch=8, num_images_per_class=8, batch_size=64)
    random = params.replace(num_classes_per_batch=None, num_images_per_class=None, batch_size=64)
    rows = [
        (f"random pipeline (buffer {random.train_size})",
         *time_pipeline(images, labels, random, args.epochs)),
        ("balanced pipeline (8 x 8)", *time_pipeline(images, labels, balanced, args.epochs)),
    ]
    from bench_train import time_train_step
    from model import augment, pipelines

    batch_images, batch_labels = next(iter(pipelines.train_dataset(images, labels, random, 0)))
    step = time_train_step(random, batch_images, batch_labels, args.epochs, args.steps)

    print(f"TensorFlow {tf.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {len(labels)} train images, batch 64, "
          f"num_parallel_calls {params.num_parallel_calls}\n")
    print("| what | images/s (steady) | images/s (whole epoch) | x step |")
    print("|---|---:|---:|---:|")
    for name, steady, whole in rows:
        print(f"| {name} | {steady:,.0f} | {whole:,.0f} | {min(steady, whole) / step:.1f} |")
    print(f"| training step ({os.path.basename(os.path.normpath(args.model_dir))}, "
          f"{params.triplet_strategy}) | {step:,.0f} | | 1.0 |")
    worst = min(min(steady, whole) for _, steady, whole in rows) / step
    print(f"\nslowest pipeline / training step = {worst:.1f} (target >= 10)")

    if args.folder_images == "0":
        return
    folder_params, rows, step = folder_rows(args)
    print(f"\nClass folders: {folder_params.image_size} x {folder_params.image_size} x "
          f"{folder_params.image_channels}, resize {folder_params.resize}, augmentation "
          f"{'on' if augment.enabled(folder_params) else 'off'}, batch 64, num_parallel_calls "
          f"{folder_params.num_parallel_calls}\n")
    print("| what | images/s (steady) | images/s (whole epoch) | x step | anonymous memory "
          "growth (MB) | file-backed (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, steady, whole, (anonymous, mapped) in rows:
        print(f"| {name} | {steady:,.0f} | {whole:,.0f} | {min(steady, whole) / step:.1f} | "
              f"{anonymous:.0f} | {mapped:.0f} |")
    print(f"| training step ({os.path.basename(os.path.normpath(args.folder_model_dir))}) | "
          f"{step:,.0f} | | 1.0 | | |")
    streamed = min(min(steady, whole) for name, steady, whole, _ in rows
                   if "streamed" in name) / step
    print(f"\nslowest streamed pipeline / training step = {streamed:.1f} (target >= 3)")


if __name__ == "__main__":
    main()
