"""Gallery search (model/retrieval.py): exact (faiss IndexFlatL2) vs approximate (HNSW).

Usage:
    python benchmarks/bench_retrieval.py [--sizes 10000,100000,1000000] [--dim 64]
                                         [--queries 1000] [--k 10]

Prints a markdown table: for each gallery size and index, the build time, queries per
second (``--queries`` queries in one batch), recall@k against the exact search (the
share of the exact k nearest that the index returns), the index's size and the peak
resident memory of the process (about 600 MB of it is TensorFlow, which the retrieval
module imports). Each size runs in a fresh Python process, so its peak is its own.
The vectors are Gaussian clusters (100 of them, 64-d), queries drawn the same way.
Other work on the machine slows every row: compare rows of one run.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated gallery sizes (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=64, help="vector size (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=1000,
                        help="queries per search (default: %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="neighbours (default: %(default)s)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    return parser.parse_args(argv)


def measure(size, dim, num_queries, k):
    """One size, in this process: both indexes, as a dict of figures per index."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from model import retrieval

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, dim)).astype(np.float32) * 2
    vectors = centres[rng.integers(0, 100, size)] + rng.normal(size=(size, dim)).astype(
        np.float32)
    queries = centres[rng.integers(0, 100, num_queries)] + rng.normal(
        size=(num_queries, dim)).astype(np.float32)
    rows = {}
    exact_neighbours = None
    for kind, limit in (("exact", size), ("HNSW", size - 1)):
        retrieval.EXACT_MAX_GALLERY = limit
        start = time.perf_counter()
        index = retrieval.build_index(vectors)
        built = time.perf_counter() - start
        start = time.perf_counter()
        _, found = index.search(queries, k)
        searched = time.perf_counter() - start
        if exact_neighbours is None:
            exact_neighbours = found
        recall = float(np.mean([len(set(a) & set(b)) / k
                                for a, b in zip(found, exact_neighbours)]))
        import faiss

        rows[kind] = {"build_s": built, "qps": num_queries / searched, "recall": recall,
                      "index_mb": faiss.serialize_index(index).nbytes / 2**20,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        del index
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.dim, args.queries, args.k)))
        return 0
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {args.dim}-d vectors, "
          f"{args.queries} queries, k = {args.k}\n")
    print(f"| gallery | index | build (s) | queries/s | recall@{args.k} | index (MB) | "
          "peak RSS (MB) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in (int(text) for text in args.sizes.split(",")):
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--one", str(size), "--dim",
             str(args.dim), "--queries", str(args.queries), "--k", str(args.k)],
            capture_output=True, text=True, check=True)
        rows = json.loads(result.stdout.strip().splitlines()[-1])
        for kind, row in rows.items():
            print(f"| {size:,} | {kind} | {row['build_s']:.2f} | {row['qps']:,.0f} | "
                  f"{row['recall']:.4f} | {row['index_mb']:.0f} | {row['peak_mb']:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
