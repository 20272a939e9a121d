"""Write a class-folder dataset of colour digits, for experiments/colour_mnist.

    python examples/make_colour_mnist.py --out data/colour_mnist
    python train.py --model_dir experiments/colour_mnist --data_dir data/colour_mnist

Each image is a shipped MNIST digit, drawn in a random bright colour on a random dark
background, scaled by a random factor and placed at a random position on a canvas of
random size (48 to 96 pixels a side, not always square), saved as JPEG or PNG in turn:

    OUT/train/<0_zero..9_nine>/<index>.jpg|png  --train_per_class each, from MNIST's train split
    OUT/test/<0_zero..9_nine>/<index>.jpg|png   --test_per_class each, from its test split

so the folders look like users' own photos: colour, any size and aspect, two formats,
named classes. The same --seed writes the same files.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import cli, shipped_data  # noqa: E402 (after the path it is found on)

# Numbered, so that the class folders sort (and the picture's legend reads) in digit
# order: the app orders classes by folder name.
NAMES = tuple(f"{digit}_{name}" for digit, name in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write (must not hold a train/)")
    parser.add_argument("--data_dir", default=shipped_data.MNIST_DIR,
                        help="MNIST IDX folder to draw the digits from (default: %(default)s)")
    parser.add_argument("--train_per_class", type=int, default=1000,
                        help="train images per class (default: %(default)s)")
    parser.add_argument("--test_per_class", type=int, default=200,
                        help="test images per class (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def colour_digit(digit, rng):
    """uint8 [H, W, 3]: ``digit`` (uint8 [28, 28]) coloured, scaled and placed at random."""
    import numpy as np
    import tensorflow as tf

    height, width = rng.integers(48, 97, size=2)
    scale = rng.uniform(1.2, 2.0) * min(height, width) / 56
    side = max(8, int(28 * scale))
    ink = tf.image.resize(digit[..., None].astype(np.float32) / 255, [side, side]).numpy()
    ink = np.clip(ink, 0, 1)[:side, :side]
    side = min(side, height, width)
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    background = rng.uniform(0, 90, 3)
    foreground = rng.uniform(150, 255, 3)
    canvas = np.tile(background, (height, width, 1)) + rng.normal(0, 6, (height, width, 3))
    patch = canvas[top:top + side, left:left + side]
    canvas[top:top + side, left:left + side] = (patch * (1 - ink[:side, :side])
                                               + foreground * ink[:side, :side])
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def main(argv=None):
    args = parse_args(argv)
    from model.errors import UserError

    if os.path.isdir(os.path.join(args.out, "train")):
        raise UserError(f"{args.out} already holds a train/ folder; choose another --out")
    cli.import_tensorflow()
    import numpy as np
    import tensorflow as tf

    from model import files, mnist_dataset
    rng = np.random.default_rng(args.seed)
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        digits, labels = mnist_dataset.load_split(args.data_dir, split)
        for label, name in enumerate(NAMES):
            folder = os.path.join(args.out, split, name)
            os.makedirs(folder, exist_ok=True)
            chosen = rng.choice(np.flatnonzero(labels == label), per_class, replace=False)
            for i, index in enumerate(chosen):
                image = colour_digit(digits[index], rng)
                jpeg = i % 2 == 0
                data = tf.io.encode_jpeg(image, quality=90) if jpeg else tf.io.encode_png(image)
                files.write_bytes(os.path.join(folder, f"{index:05d}.{'jpg' if jpeg else 'png'}"),
                                  data.numpy())
        print(f"{split}: {per_class * len(NAMES)} images in {os.path.join(args.out, split)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
