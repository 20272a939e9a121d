"""Offline triplets against online batch-all under one time budget: the blog's argument, measured.

    python examples/offline_triplets.py [--seconds 120] [--margin 0.5]

Offline, as the tutorials do it: random (anchor, positive, negative) triplets of MNIST
training images are drawn before training and fed to a three-branch Keras model (one
embedding network shared by its three inputs, the three embeddings stacked [B, 3, D]),
trained with ``tftriplet.TripletLoss`` (the hinge on Euclidean distances) on batches of
64 triplets. Online: the same network, from the same initial weights, trained with
``tftriplet.BatchAllTripletLoss`` on batches of 64 images, every valid triplet of the
batch mined. The embedding network is the project's base model (``model/network.py``,
the defaults of params.json) and both use Adam at the same learning rate. Each run trains
for ``--seconds`` of wall time (checked after every batch), then the 10,000 test images
are embedded and scored with the retrieval metrics (P@1, R-precision, MAP@R, leave-one-out),
printed side by side.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import cli  # noqa: E402

BATCH = 64


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="training time of each run (default: %(default)s)")
    parser.add_argument("--margin", type=float, default=0.5,
                        help="margin of both losses (default: %(default)s, base_model's)")
    parser.add_argument("--learning_rate", type=float, default=1e-3,
                        help="Adam's learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=230, help="seeds weights and triplets")
    cli.add_data_dir_argument(parser)
    return parser.parse_args(argv)


def random_triplets(labels, count, rng):
    """[count, 3] indices (anchor, positive, negative): a random anchor, a random other
    image of its class, a random image of another class (every class has two images)."""
    import numpy as np

    anchors = rng.integers(0, len(labels), count)
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    first = np.searchsorted(labels[order], labels[anchors], side="left")
    size = np.searchsorted(labels[order], labels[anchors], side="right") - first
    # One of the class's other members: a draw among size - 1 that skips the anchor.
    drawn = first + rng.integers(0, size - 1)
    positives = order[drawn + (drawn >= rank[anchors])]
    negatives = rng.integers(0, len(labels), count)
    while np.any(same := labels[negatives] == labels[anchors]):
        negatives[same] = rng.integers(0, len(labels), int(same.sum()))
    return np.stack([anchors, positives, negatives], axis=1)


def train_for(model, loss, batches, seconds, learning_rate):
    """Adam steps of ``model`` on ``batches`` (x, y) until ``seconds`` have passed; returns
    the number of steps and of examples seen."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    steps = examples = 0
    start = time.time()
    for x, y in batches:
        model.train_on_batch(x, y)
        steps, examples = steps + 1, examples + len(x)
        if time.time() - start >= seconds:
            return steps, examples
    return steps, examples


def main(argv=None):
    args = parse_args(argv)
    cli.import_tensorflow()
    import keras
    import numpy as np

    from model import mnist_dataset, network
    from model.params import Params
    from tftriplet import BatchAllTripletLoss, TripletLoss, metrics

    cli.set_logger()
    train_images, train_labels = mnist_dataset.load_split(args.data_dir, "train")
    test_images, test_labels = mnist_dataset.load_split(args.data_dir, "test")
    pixels = (train_images[..., None] / np.float32(255)).astype(np.float32)
    rng = np.random.default_rng(args.seed)
    params = Params()

    def embedding_network():
        keras.utils.set_random_seed(args.seed)  # the same initial weights for both runs
        return network.build_plain_model(params)

    def offline_batches():
        while True:  # fresh random triplets, as many as the time allows
            triplets = random_triplets(train_labels, 100 * BATCH, rng)
            for start in range(0, len(triplets), BATCH):
                chosen = triplets[start:start + BATCH]
                yield pixels[chosen], np.zeros(len(chosen), np.float32)

    def online_batches():
        while True:
            order = rng.permutation(len(train_labels))
            for start in range(0, len(order) - BATCH + 1, BATCH):
                chosen = order[start:start + BATCH]
                yield pixels[chosen], train_labels[chosen]

    embed = embedding_network()
    inputs = keras.Input((3, *pixels.shape[1:]))
    three_branch = keras.Model(inputs, keras.ops.stack(
        [embed(inputs[:, branch]) for branch in range(3)], axis=1))
    online = embedding_network()
    rows = []
    for name, model, embedder, loss, batches in (
            ("offline random triplets", three_branch, embed,
             TripletLoss(args.margin, distance_metric="L2"), offline_batches()),
            ("online batch-all", online, online, BatchAllTripletLoss(args.margin),
             online_batches())):
        steps, examples = train_for(model, loss, batches, args.seconds, args.learning_rate)
        embeddings = embedder.predict(test_images[..., None] / np.float32(255), batch_size=1000,
                                      verbose=0)
        results = metrics.retrieval_metrics(embeddings, test_labels)
        rows.append((name, steps, examples, results))
        print(f"{name}: {steps} steps ({examples:,} {'triplets' if 'offline' in name else 'images'})"
              f" in {args.seconds:.0f} s; P@1 {results['precision_at_1']:.4f}", flush=True)
    print()
    print(f"| training ({args.seconds:.0f} s each) | steps | P@1 | R-precision | MAP@R |")
    print("|---|---:|---:|---:|---:|")
    for name, steps, _, results in rows:
        print(f"| {name} | {steps} | {results['precision_at_1']:.4f} | "
              f"{results['r_precision']:.4f} | {results['map_at_r']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
