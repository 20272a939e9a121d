"""Time and memory of every triplet-loss strategy (loss + gradient) for growing batch sizes.

Usage:
    python benchmarks/bench_losses.py [--sizes 64,256,512,1024,2048,4096] [--dim 64] [--repeats 5]
        [--blocks off,auto] [--xla off,on,relabel] [--strategies batch_all,...]

Prints a markdown table. Each (strategy, batch size) runs in a fresh Python
process so that its peak resident memory (ru_maxrss) is its own; the table
gives that peak minus the process's peak right after importing TensorFlow
("extra"), and the total. Time is the median and the minimum over ``--repeats``
calls of a ``tf.function`` computing the loss and its gradient with respect to
the embeddings, after one warm-up call (tracing); on a shared machine whose
speed drifts, the minimum is the steadier figure. A configuration whose warm-up
call is slow gets fewer repeats so that it takes about ``--seconds``.
Labels are drawn uniformly from ``--classes`` classes, as in MNIST batches.

``--blocks off,blocked`` times each configuration with the [B, B] losses (``block_size=0``)
and in blocks of anchors of the size the losses would choose (tftriplet/blocked.py), at
every B; ``auto`` is what the losses do by themselves (blocks above B = 4,096), and a
number forces blocks of that many anchors. On a GPU the memory
columns are TensorFlow's peak GPU allocation (``tf.config.experimental.get_memory_info``)
instead of the process's resident memory.

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
# Peak memory of the unblocked losses + gradient in B x B float32 matrices (measured:
# batch-all 11.3 at B = 16,384, 12.1 GB), to skip sizes that cannot fit.
UNBLOCKED_SQUARES = 12


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
    parser.add_argument("--unblocked-cap-gb", type=float, default=16.0,
                        help="skip the [B, B] losses (--blocks off) where they would need more "
                        "memory (default: %(default)s)")
    parser.add_argument("--xla", default="off",
                        help="comma-separated: off, on (jit_compile=True), relabel (XLA with "
                        "new labels at every call) (default: %(default)s)")
    parser.add_argument("--blocks", default="auto",
                        help="comma-separated: off (the [B, B] losses), auto (blocks above "
                        "B = 4,096), blocked (blocks of the automatic size at every B), or "
                        "anchors per block (default: %(default)s)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated subset of " + ", ".join(STRATEGIES))
    # Internal: measure one configuration in this process and print it as JSON.
    parser.add_argument("--worker", nargs=4, metavar=("STRATEGY", "B", "XLA", "BLOCKS"),
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
    args.blocks = args.blocks.split(",")
    if not all(blocks in ("off", "auto", "blocked") or blocks.isdigit() and int(blocks) > 0
               for blocks in args.blocks):
        parser.error("--blocks takes off, auto, blocked and positive numbers, got "
                     f"{','.join(args.blocks)!r}")
    if min(args.sizes) < 1 or args.dim < 1 or args.repeats < 1 or args.classes < 1:
        parser.error("--sizes, --dim, --repeats and --classes must be positive")
    return args


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(strategy, batch_size, xla, blocks, args):
    """Run one configuration in this process; returns a dict of figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf

    from tftriplet import losses as keras_losses
    from tftriplet import triplet_loss

    gpu = bool(tf.config.list_physical_devices("GPU"))
    baseline = _peak_rss_mb()
    from tftriplet import blocked

    block_size = {"off": 0, "auto": None, "blocked": blocked.automatic_block_size(batch_size)
                  }.get(blocks) if not blocks.isdigit() else int(blocks)
    margin = args.margin
    losses = {
        "batch_all": lambda l, e: triplet_loss.batch_all_triplet_loss(
            l, e, margin, block_size=block_size)[0],
        "batch_all_soft": lambda l, e: triplet_loss.batch_all_triplet_loss(
            l, e, margin, soft_margin=True, block_size=block_size)[0],
        "batch_hard": lambda l, e: triplet_loss.batch_hard_triplet_loss(
            l, e, margin, block_size=block_size)[0],
        "batch_semihard": lambda l, e: triplet_loss.batch_semihard_triplet_loss(
            l, e, margin, block_size=block_size),
        "batch_all_naive": lambda l, e: triplet_loss.batch_all_triplet_loss_naive(
            l, e, margin)[0],
        "keras_batch_all": keras_losses.BatchAllTripletLoss(margin),
        "keras_semihard": keras_losses.TripletSemiHardLoss(margin),
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

    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    warm_up = timed_call()
    repeats = max(1, min(args.repeats, int(args.seconds / max(warm_up, 1e-9))))
    times = [timed_call() for _ in range(repeats)]
    if gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        extra = peak
    else:
        peak = _peak_rss_mb()
        extra = peak - baseline
    return {"ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "repeats": repeats, "extra_mb": extra, "peak_mb": peak}


def naive_estimate_gb(batch_size):
    return NAIVE_CUBES * 4 * batch_size**3 / 1e9


def run_worker(strategy, batch_size, xla, blocks, args):
    """Measure one configuration in a fresh process (its own peak memory)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", strategy, str(batch_size),
               xla, blocks,
               "--dim", str(args.dim), "--repeats", str(args.repeats),
               "--seconds", str(args.seconds), "--classes", str(args.classes),
               "--margin", str(args.margin)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_row(batch_size, strategy, xla, blocks, result):
    start = f"| {batch_size} | {strategy} | {xla} | {blocks} |"
    if "skipped" in result:
        return f"{start} {result['skipped']} | | | | |"
    if "error" in result:
        return f"{start} failed: {result['error']} | | | | |"
    return (f"{start} {result['ms']:.1f} | {result['min_ms']:.1f} "
            f"| {result['repeats']} "
            f"| {result['extra_mb']:.0f} | {result['peak_mb']:.0f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        strategy, batch_size, xla, blocks = args.worker
        print(json.dumps(measure(strategy, int(batch_size), xla, blocks, args)))
        return 0
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; D = {args.dim}, {args.classes} classes, "
          f"margin {args.margin}, loss + gradient in tf.function")
    print()
    print("| B | strategy | XLA | blocks | median ms | min ms | repeats | extra peak MB "
          "| total peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = {}
    for batch_size in args.sizes:
        for strategy in args.strategies:
            for xla in args.xla:
                for blocks in args.blocks:
                    result = _run_or_skip(strategy, batch_size, xla, blocks, args)
                    if result is None:
                        continue
                    results[batch_size, strategy, xla, blocks] = result
                    print(format_row(batch_size, strategy, xla, blocks, result), flush=True)
    print()
    for (batch_size, strategy, xla, blocks), result in results.items():
        fast = results.get((batch_size, "batch_all", xla, blocks))
        if strategy == "batch_all_naive" and fast and "ms" in fast and "ms" in result:
            print(f"B = {batch_size}: batch_all is {result['ms'] / fast['ms']:.1f}x faster "
                  "than the naive B^3 version")
    return 0


def _run_or_skip(strategy, batch_size, xla, blocks, args):
    """The figures of one configuration; None for one that does not exist (the naive and
    Keras losses have no block_size: they appear once, under the first --blocks)."""
    if strategy in ("batch_all_naive", "keras_batch_all", "keras_semihard"):
        if blocks != args.blocks[0]:
            return None
    estimate = naive_estimate_gb(batch_size)
    if strategy == "batch_all_naive" and estimate > args.naive_cap_gb:
        return {"skipped": f"skipped (needs ~{estimate:.0f} GB)"}
    estimate = UNBLOCKED_SQUARES * 4 * batch_size**2 / 1e9
    if blocks == "off" and estimate > args.unblocked_cap_gb:
        return {"skipped": f"skipped (needs ~{estimate:.0f} GB)"}
    return run_worker(strategy, batch_size, xla, blocks, args)


if __name__ == "__main__":
    sys.exit(main())
