"""Where the shipped MNIST is (the default ``--data_dir``).

Package data inside the app (``tftriplet_app/data/mnist``) in an installed wheel;
``data/mnist`` beside ``model/`` in a clone (and an editable install). A module of its
own, importing nothing heavy: the commands read it before NumPy and TensorFlow load.
"""

import os

_APP_DIR = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_MNIST_DIR = os.path.join(_APP_DIR, "data", "mnist")
MNIST_DIR = (_PACKAGE_MNIST_DIR if os.path.isdir(_PACKAGE_MNIST_DIR)
             else os.path.join(os.path.dirname(_APP_DIR), "data", "mnist"))
