"""Time and memory of the retrieval metrics (tftriplet/metrics.py) on a test-set-sized input.

Usage:
    python benchmarks/bench_metrics.py [--n 10000] [--dim 64] [--classes 10]
                                       [--chunk_sizes 1024,2048] [--threads 1,2]
                                       [--repeats 3]

Prints a markdown table. Each (chunk size, threads) pair runs in a fresh Python
process so that its peak resident memory (ru_maxrss) is its own; the table gives
that peak minus the peak just before the first call (module imported, embeddings
built: "extra"), and the total. Time is the median of ``--repeats`` calls after a
warm-up call on a small input. The embeddings are Gaussian clusters, one per
class, with labels drawn uniformly, so R is about n / classes as on MNIST.
Other work on the machine slows every row: compare rows of one run.
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000,
                        help="number of embeddings (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=64,
                        help="embedding size (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=10,
                        help="number of labels (default: %(default)s)")
    parser.add_argument("--chunk_sizes", default="1024,2048",
                        help="comma-separated chunk sizes (default: %(default)s)")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated values of metrics.MAX_THREADS (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (default: %(default)s)")
    # Internal: measure one chunk size and thread count in this process, print it as JSON.
    parser.add_argument("--worker", type=int, nargs=2, metavar=("CHUNK_SIZE", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("chunk_sizes", "threads"):
        text = getattr(args, name)
        try:
            setattr(args, name, [int(value) for value in text.split(",")])
        except ValueError:
            parser.error(f"--{name} must be comma-separated integers, got {text!r}")
    return args


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args):
    sys.path.insert(0, ROOT)
    import numpy as np

    from tftriplet import metrics

    chunk_size, metrics.MAX_THREADS = args.worker
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, size=args.n)
    centres = rng.normal(size=(args.classes, args.dim)) * 0.5
    embeddings = (centres[labels] + rng.normal(size=(args.n, args.dim))).astype(np.float32)
    metrics.retrieval_metrics(embeddings[:200], labels[:200], chunk_size=chunk_size)  # warm-up
    before = peak_rss_mb()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = metrics.retrieval_metrics(embeddings, labels, chunk_size=chunk_size)
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times), "extra_mb": peak_rss_mb() - before,
                      "total_mb": peak_rss_mb(), **result}))


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        return worker(args)
    print(f"retrieval_metrics, N = {args.n}, D = {args.dim}, {args.classes} classes; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| chunk_size | threads | time (s) | peak extra (MB) | peak total (MB) | P@1 | MAP@R |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for chunk_size in args.chunk_sizes:
        for threads in args.threads:
            command = [sys.executable, os.path.abspath(__file__),
                       "--worker", str(chunk_size), str(threads), "--n", str(args.n),
                       "--dim", str(args.dim), "--classes", str(args.classes),
                       "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"| {chunk_size} | {threads} | failed: "
                      f"{done.stderr.strip().splitlines()[-1]} |||||")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {chunk_size} | {threads} | {row['seconds']:.2f} | {row['extra_mb']:.0f} | "
                  f"{row['total_mb']:.0f} | {row['precision_at_1']:.4f} | {row['map_at_r']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
