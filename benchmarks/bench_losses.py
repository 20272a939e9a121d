"""Time and memory of every triplet-loss strategy (loss + gradient) for growing batch sizes.

Usage:
    python benchmarks/bench_losses.py [--sizes 64,256,512,1024,2048,4096] [--dim 64] [--repeats 5]

Prints a markdown table. Each (strategy, batch size) runs in a fresh Python
process so that its peak resident memory (ru_maxrss) is its own; the table
gives that peak minus the process's peak right after importing TensorFlow
("extra"), and the total. Time is the median and the minimum over ``--repeats``
calls of a ``tf.function`` computing the loss and its gradient with respect to
the embeddings, after one warm-up call (tracing); on a shared machine whose
speed drifts, the minimum is the steadier figure. A configuration whose warm-up
call is slow gets fewer repeats so that it takes about ``--seconds``.
Labels are drawn uniformly from ``--classes`` classes, as in MNIST batches.

``keras_batch_all`` and ``keras_semihard`` time the Keras loss objects of
``tftriplet/losses.py`` (``BatchAllTripletLoss()``, ``TripletSemiHardLoss()``) on the same
inputs, to compare with the functions they wrap (``batch_all``; ``batch_semihard``,
whose averaging differs slightly). ``--xla off,on,relabel`` times each configuration without
and with ``tf.function(jit_compile=True)`` (XLA), as ``model.fit(jit_compile=True)``
would compile the loss; ``relabel`` is XLA with new labels at every call, as in
training (``on`` reuses one batch's labels).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STRATEGIES = ("batch_all", "batch_all_soft", "batch_hard", "batch_semihard", "batch_all_naive",
              "keras_batch_all", "keras_semihard")
# Peak memory of the naive loss + gradient in B x B x B float32 tensors (measured
# ~4.6 at B = 512: 2.5 GB; 21.9 GB at B = 1024), to skip sizes that cannot fit.
NAIVE_CUBES = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256,512,1024,2048,4096",
                        help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=64, help="embedding size (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per configuration (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="time budget per configuration for the repeats (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=10,
                        help="number of classes the labels are drawn from (default: %(default)s)")
    parser.add_argument("--margin", type=float, default=0.5, help="margin (default: %(default)s)")
    parser.add_argument("--naive-cap-gb", type=float, default=8.0,
                        help="skip the naive B^3 loss where it would need more memory "
                        "(default: %(default)s)")
    parser.add_argument("--xla", default="off",
                        help="comma-separated: off, on (jit_compile=True), relabel (XLA with "
                        "new labels at every call) (default: %(default)s)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated subset of " + ", ".join(STRATEGIES))
    # Internal: measure one configuration in this process and print it as JSON.
    parser.add_argument("--worker", nargs=3, metavar=("STRATEGY", "B", "XLA"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    args.strategies = args.strategies.split(",")
    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}")
    args.xla = args.xla.split(",")
    if not set(args.xla) <= {"off", "on", "relabel"}:
        parser.error(f"--xla takes off, on and relabel, got {','.join(args.xla)!r}")
    if min(args.sizes) < 1 or args.dim < 1 or args.repeats < 1 or args.classes < 1:
        parser.error("--sizes, --dim, --repeats and --classes must be positive")
    return args


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(strategy, batch_size, xla, args):
    """Run one configuration in this process; returns a dict of figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf

    from tftriplet import losses as keras_losses
    from tftriplet import triplet_loss

    baseline = _peak_rss_mb()
    losses = {
        "batch_all": lambda l, e: triplet_loss.batch_all_triplet_loss(l, e, args.margin)[0],
        "batch_all_soft": lambda l, e: triplet_loss.batch_all_triplet_loss(
            l, e, args.margin, soft_margin=True)[0],
        "batch_hard": lambda l, e: triplet_loss.batch_hard_triplet_loss(l, e, args.margin)[0],
        "batch_semihard": lambda l, e: triplet_loss.batch_semihard_triplet_loss(l, e, args.margin),
        "batch_all_naive": lambda l, e: triplet_loss.batch_all_triplet_loss_naive(
            l, e, args.margin)[0],
        "keras_batch_all": keras_losses.BatchAllTripletLoss(args.margin),
        "keras_semihard": keras_losses.TripletSemiHardLoss(args.margin),
    }
    loss_fn = losses[strategy]

    @tf.function(jit_compile=xla != "off")
    def step(labels, embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = loss_fn(labels, embeddings)
        return loss, tape.gradient(loss, embeddings)

    rng = np.random.default_rng(0)
    embeddings = tf.constant(rng.normal(size=(batch_size, args.dim)).astype(np.float32))
    fixed_labels = tf.constant(rng.integers(0, args.classes, batch_size))

    def timed_call():
        labels = (tf.constant(rng.integers(0, args.classes, batch_size)) if xla == "relabel"
                  else fixed_labels)
        start = time.perf_counter()
        loss, grad = step(labels, embeddings)
        loss.numpy(), grad.numpy()  # wait for the result
        return time.perf_counter() - start

    warm_up = timed_call()
    repeats = max(1, min(args.repeats, int(args.seconds / max(warm_up, 1e-9))))
    times = [timed_call() for _ in range(repeats)]
    peak = _peak_rss_mb()
    return {"ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "repeats": repeats, "extra_mb": peak - baseline, "peak_mb": peak}


def naive_estimate_gb(batch_size):
    return NAIVE_CUBES * 4 * batch_size**3 / 1e9


def run_worker(strategy, batch_size, xla, args):
    """Measure one configuration in a fresh process (its own peak memory)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", strategy, str(batch_size),
               xla,
               "--dim", str(args.dim), "--repeats", str(args.repeats),
               "--seconds", str(args.seconds), "--classes", str(args.classes),
               "--margin", str(args.margin)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_row(batch_size, strategy, xla, result):
    if "skipped" in result:
        return f"| {batch_size} | {strategy} | {xla} | {result['skipped']} | | | | |"
    if "error" in result:
        return f"| {batch_size} | {strategy} | {xla} | failed: {result['error']} | | | | |"
    return (f"| {batch_size} | {strategy} | {xla} | {result['ms']:.1f} | {result['min_ms']:.1f} "
            f"| {result['repeats']} "
            f"| {result['extra_mb']:.0f} | {result['peak_mb']:.0f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        strategy, batch_size, xla = args.worker
        print(json.dumps(measure(strategy, int(batch_size), xla, args)))
        return 0
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; D = {args.dim}, {args.classes} classes, "
          f"margin {args.margin}, loss + gradient in tf.function")
    print()
    print("| B | strategy | XLA | median ms | min ms | repeats | extra peak MB | total peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for batch_size in args.sizes:
        for strategy in args.strategies:
            for xla in args.xla:
                estimate = naive_estimate_gb(batch_size)
                if strategy == "batch_all_naive" and estimate > args.naive_cap_gb:
                    result = {"skipped": f"skipped (needs ~{estimate:.0f} GB)"}
                else:
                    result = run_worker(strategy, batch_size, xla, args)
                results[batch_size, strategy, xla] = result
                print(format_row(batch_size, strategy, xla, result), flush=True)
    print()
    for batch_size in args.sizes:
        fast = results.get((batch_size, "batch_all", args.xla[0]))
        naive = results.get((batch_size, "batch_all_naive", args.xla[0]))
        if fast and naive and "ms" in fast and "ms" in naive:
            print(f"B = {batch_size}: batch_all is {naive['ms'] / fast['ms']:.1f}x faster "
                  "than the naive B^3 version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
