"""t-SNE of 10,000 embeddings: scikit-learn's TSNE against openTSNE (which one to ship).

Usage:
    python benchmarks/bench_tsne.py [--points 10000] [--dim 64] [--classes 10]

Embeds seeded Gaussian clusters (one per class, in --dim dimensions, close enough that
a few points have a nearest neighbour of another class, like trained MNIST embeddings)
with each library at perplexity 30, PCA initialisation and its default iterations, on
every core this process may use, and prints a markdown table:

- seconds: wall time of the fit alone (imports and data excluded);
- peak MB: the peak resident memory of the worker process (each library runs in a
  fresh one, so that the figure is its own);
- 1-NN: leave-one-out 1-nearest-neighbour accuracy of the 2-D points by class (how
  well the picture keeps the classes apart), and in a last row the same figure for
  the embeddings themselves, for comparison (a t-SNE, which pulls clusters together,
  may beat it);
- trustworthiness: scikit-learn's ``trustworthiness`` at 10 neighbours (1.0: the 2-D
  neighbours of every point are neighbours in the embedding space too), on 2,000
  seeded points of the result, since it needs all pairwise distances.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

LIBRARIES = ("scikit-learn", "openTSNE")
TRUSTWORTHINESS_POINTS = 2000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--worker", choices=LIBRARIES + ("reference",), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cores():
    """The cores this process may run on (a container or taskset may allow fewer than exist)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def clusters(points, dim, classes, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, points)
    # 0.6: about 3 % of the points have a nearest neighbour of another class in 64-D.
    centres = rng.normal(size=(classes, dim)) * 0.6
    return (centres[labels] + rng.normal(size=(points, dim))).astype(np.float32), labels


def quality(embeddings, points, labels):
    import numpy as np
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import NearestNeighbors

    # Leave-one-out 1-NN: the first neighbour of a point is the point itself.
    nearest = NearestNeighbors(n_neighbors=2).fit(points).kneighbors(
        points, return_distance=False)[:, 1]
    sample = np.random.default_rng(0).choice(
        len(points), min(len(points), TRUSTWORTHINESS_POINTS), replace=False)
    return {"one_nn": float(np.mean(labels[nearest] == labels)),
            "trust": float(trustworthiness(embeddings[sample], points[sample], n_neighbors=10))}


def measure(library, args):
    import numpy as np

    embeddings, labels = clusters(args.points, args.dim, args.classes)
    if library == "reference":
        return {"version": "", "seconds": None, "peak_mb": None,
                **quality(embeddings, embeddings, labels)}
    if library == "scikit-learn":
        import sklearn
        from sklearn.manifold import TSNE

        version = sklearn.__version__
        tsne = TSNE(perplexity=30, init="pca", random_state=0, n_jobs=cores())
        start = time.perf_counter()
        points = tsne.fit_transform(embeddings)
    else:
        import openTSNE

        version = openTSNE.__version__
        tsne = openTSNE.TSNE(perplexity=30, initialization="pca", random_state=0,
                             n_jobs=cores())
        start = time.perf_counter()
        points = tsne.fit(embeddings)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"version": version, "seconds": seconds, "peak_mb": peak,
            **quality(embeddings, np.asarray(points), labels)}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return 0
    print(f"{args.points} points x {args.dim} dims, {args.classes} classes, {cores()} cores, "
          "perplexity 30, PCA initialisation\n")
    print("| library | version | seconds | peak MB | 1-NN accuracy | trustworthiness |")
    print("|---|---|---:|---:|---:|---:|")
    for library in LIBRARIES + ("reference",):
        command = [sys.executable, os.path.abspath(__file__), "--worker", library,
                   "--points", str(args.points), "--dim", str(args.dim),
                   "--classes", str(args.classes)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {library} | failed: {done.stderr.strip().splitlines()[-1]} | | | | |")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if library == "reference":
            # Its trustworthiness is 1 by definition.
            print(f"| (the {args.dim}-D embeddings themselves) | | | | "
                  f"{result['one_nn']:.4f} | |")
        else:
            print(f"| {library} | {result['version']} | {result['seconds']:.1f} | "
                  f"{result['peak_mb']:.0f} | {result['one_nn']:.4f} | {result['trust']:.4f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
