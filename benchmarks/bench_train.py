"""Training throughput of base_model's step: exact O(B^2) batch-all vs the textbook B^3 one.

Usage:
    python benchmarks/bench_train.py [--model_dir experiments/base_model]
                                     [--batch_sizes 64,512] [--steps 30] [--runs 3]
                                     [--mixed_precision] [--vary KEY=V1,V2 ...]

For each batch size, times the full training step (forward, loss, backward, Adam
update, as train.py runs it) on a fixed batch of MNIST-shaped random images with 10
classes: median over ``--runs`` runs of ``--steps`` steps after warm-up. The same
network is timed with ``tftriplet.triplet_loss.batch_all_triplet_loss_naive`` (the B x B x B
definition) as the step's ``loss_fn`` in place of the exact O(B^2) batch-all. Prints a markdown table.

``--vary num_conv_blocks=3 num_channels=48,64`` adds one row per value, the experiment's
params with that one key changed: what a change of capacity costs per step, side by side
in one run (the machine's speed drifts between runs).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WARMUP_STEPS = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=os.path.join(ROOT, "experiments", "base_model"),
                        help="experiment whose params.json is timed (default: %(default)s)")
    parser.add_argument("--batch_sizes", default="64,512",
                        help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    parser.add_argument("--mixed_precision", action="store_true",
                        help="also time the step with params mixed_precision true")
    parser.add_argument("--vary", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="also time the step with one params key changed, one row per "
                             "value (values as in search_hyperparams.py's --grid)")
    return parser.parse_args(argv)


def textbook_batch_all(params, labels, embeddings):
    """The training step's loss with the B^3 batch-all definition."""
    from tftriplet import triplet_loss

    loss, fraction = triplet_loss.batch_all_triplet_loss_naive(
        labels, embeddings, params.margin, params.squared, params.soft_margin)
    return loss, {"fraction_positive_triplets": fraction}


def time_train_step(params, images, labels, runs, steps, loss=None):
    """Median images/s of ``params``' training step on one fixed batch (images, labels).

    ``loss(params, labels, embeddings)`` replaces the step's loss when given.
    """
    import functools

    import keras

    from model.network import build_model, make_optimizer, make_train_step

    keras.utils.set_random_seed(params.seed)
    model = build_model(params)
    loss_fn = functools.partial(loss, params) if loss else None
    # A cosine schedule needs a length: the timed steps are one "epoch".
    optimizer = make_optimizer(params, steps_per_epoch=WARMUP_STEPS + runs * steps)
    train_step = make_train_step(model, optimizer, params, loss_fn=loss_fn)
    for _ in range(WARMUP_STEPS):
        loss, _ = train_step(images, labels)
    float(loss)
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(steps):
            loss, _ = train_step(images, labels)
        float(loss)  # wait for the last step
        rates.append(steps * int(labels.shape[0]) / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf

    from model import network, search
    from model.errors import UserError
    from model.params import load_params

    params = load_params(args.model_dir)
    variants = [("exact batch-all, O(B^2)", {}, None)]
    if args.mixed_precision:
        variants.append(("exact batch-all, mixed precision", {"mixed_precision": True}, None))
    try:  # a bad key or value fails before any timing
        for key, values in map(search.parse_axis, args.vary):
            if key == "batch_size":
                raise UserError("time other batch sizes with --batch_sizes, not --vary")
            for value in values:
                params.replace(**{key: value})
                variants.append((f"exact batch-all, {key} {json.dumps(value)}", {key: value},
                                 None))
    except UserError as err:
        print(f"error: --vary: {err}", file=sys.stderr)
        sys.exit(2)
    variants.append(("textbook batch-all, B^3", {}, textbook_batch_all))
    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {args.model_dir}, median of {args.runs} x {args.steps} steps\n")
    print("| batch | step | images/s | ms/step |")
    print("|---:|---|---:|---:|")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        labels = tf.constant(np.arange(batch_size) % (params.num_labels or 10), tf.int64)
        for name, changes, loss in variants:
            timed = params.replace(batch_size=batch_size, **changes)
            # A varied image_size changes the input, so each row gets its own batch.
            images = tf.constant(rng.random((batch_size, *network.input_shape(timed)),
                                            dtype=np.float32))
            rate = time_train_step(timed, images, labels, args.runs, args.steps, loss)
            print(f"| {batch_size} | {name} | {rate:,.0f} | {1000 * batch_size / rate:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
