"""Embed images with a trained model; with two images, say whether they show the same class.

    python embed.py --model_dir experiments/base_model digit_a.png digit_b.png

Uses the SavedModel that train.py exports to MODEL_DIR/export and the distance threshold
calibrated on test pairs (MODEL_DIR/verification.json). Images must be IMAGE_SIZE x
IMAGE_SIZE (28 x 28 for MNIST: light digits on a dark background) unless --resize, which
resizes them as the run's params.resize says (pad, crop or stretch, as the class-folder
images were in training). Colour images are converted to grey for a grey network and
grey ones to RGB for a colour network.
"""

import sys

from .. import cli


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--model_dir", required=True, help="experiment folder of a trained run")
    parser.add_argument("--resize", action="store_true",
                        help="resize images of another size (as params.resize says) instead of "
                             "refusing them")
    parser.add_argument("images", nargs="+", help="PNG, JPEG, GIF or BMP files")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    params = cli.start_reader(args.model_dir)
    import numpy as np

    from .. import evaluation, export
    from ..errors import printable
    from ..images import read_image

    images = np.stack([read_image(path, params.image_size, args.resize,
                                      params.image_channels, params.resize)
                       for path in args.images])
    module = export.load_exported(args.model_dir)
    embeddings = module.embed(images).numpy()
    for path, embedding in zip(args.images, embeddings):
        print(f"{printable(path)}: [{', '.join(f'{v:.5f}' for v in embedding)}]")
    if len(args.images) == 2:
        verification = evaluation.read_verification(args.model_dir)
        first, second = evaluation.comparable(embeddings, params)
        distance = float(np.linalg.norm(first - second))
        threshold = verification["threshold"]
        verdict = "same" if distance <= threshold else "different"
        relation = "<=" if verdict == "same" else ">"
        print(f"distance {distance:.4f} {relation} threshold {threshold:.4f}: {verdict} "
              f"(held-out verification accuracy {evaluation.describe_accuracy(verification)})")
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
