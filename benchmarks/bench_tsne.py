"""t-SNE of 10,000 embeddings: scikit-learn's TSNE against openTSNE (which to ship).

Usage:
    python benchmarks/bench_tsne.py [--points 10000] [--dim 64] [--classes 10]

Embeds seeded Gaussian clusters (one per class, in --dim dimensions, spread so that
they overlap a little, like trained MNIST embeddings) with each library at perplexity
30 and its default iterations, on every core, and prints a markdown table: wall time,
peak memory of the process so far, and the 1-nearest-neighbour accuracy of the 2-D
points by class (how well the picture keeps the classes apart). Each library runs in a
fresh process so that its peak memory is its own.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

LIBRARIES = ("scikit-learn", "openTSNE")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def clusters(points, dim, classes, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, points)
    centres = rng.normal(size=(classes, dim)) * 3.0
    return (centres[labels] + rng.normal(size=(points, dim))).astype(np.float32), labels


def one_nn_accuracy(points, labels):
    from sklearn.neighbors import KNeighborsClassifier

    # Leave-one-out 1-NN: the nearest other point (the first neighbour is the point itself).
    neighbours = KNeighborsClassifier(n_neighbors=2).fit(points, labels)
    index = neighbours.kneighbors(points, return_distance=False)[:, 1]
    return float((labels[index] == labels).mean())


def measure(library, args):
    embeddings, labels = clusters(args.points, args.dim, args.classes)
    start = time.perf_counter()
    if library == "scikit-learn":
        import sklearn
        from sklearn.manifold import TSNE

        version = sklearn.__version__
        points = TSNE(perplexity=30, init="pca", random_state=0,
                      n_jobs=os.cpu_count()).fit_transform(embeddings)
    else:
        import openTSNE

        version = openTSNE.__version__
        points = openTSNE.TSNE(perplexity=30, random_state=0,
                               n_jobs=os.cpu_count()).fit(embeddings)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"version": version, "seconds": seconds, "peak_mb": peak,
            "one_nn": one_nn_accuracy(points, labels)}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return 0
    print(f"{args.points} points x {args.dim} dims, {args.classes} classes, {os.cpu_count()} "
          "CPUs, perplexity 30\n")
    print("| library | version | seconds | peak MB | 1-NN accuracy of the 2-D points |")
    print("|---|---|---:|---:|---:|")
    for library in LIBRARIES:
        command = [sys.executable, os.path.abspath(__file__), "--worker", library,
                   "--points", str(args.points), "--dim", str(args.dim),
                   "--classes", str(args.classes)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {library} | failed: {done.stderr.strip().splitlines()[-1]} | | | |")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {library} | {result['version']} | {result['seconds']:.1f} | "
              f"{result['peak_mb']:.0f} | {result['one_nn']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
