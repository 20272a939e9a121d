"""Images per second of the train input pipelines beside those a training step consumes.

Usage:
    python benchmarks/bench_input.py [--data_dir data/mnist] [--model_dir experiments/base_model]
                                     [--epochs 3] [--steps 50]

Loads the MNIST train split once, then times:

* each train pipeline (random batches with the params' shuffle buffer, and balanced
  8 classes x 8 images), batch 64: ``--epochs`` full epochs, each on a freshly built
  dataset as training does. "steady" counts the batches after the first 20 of an
  epoch (warm-up); "epoch" divides the epoch's images by the whole time including
  building the dataset (the per-epoch NumPy shuffle) and the warm-up. Medians over
  the epochs.
* one training step of the params in ``--model_dir`` (model.model_fn's network, loss
  and Adam update) on a fixed batch of MNIST: median over ``--epochs`` runs of
  ``--steps`` steps after 5 warm-up steps (bench_train.time_train_step).

Prints a markdown table and the ratio pipeline / step (the target is >= 10: the
input pipeline must never be what training waits for).
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
    return parser.parse_args(argv)


def time_pipeline(images, labels, params, epochs):
    """(steady images/s, whole-epoch images/s), medians over ``epochs`` epochs."""
    from model import input_fn

    steady, whole = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        sizes = []
        for i, (_, batch_labels) in enumerate(input_fn.train_dataset(images, labels, params, epoch)):
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
    from model import input_fn

    batch_images, batch_labels = next(iter(input_fn.train_dataset(images, labels, random, 0)))
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


if __name__ == "__main__":
    main()
