"""The commands: one module per entry script, each with ``main(argv)`` and ``run(argv)``.

``python train.py`` in a clone and the installed ``tftriplet-train`` both call
:func:`model.commands.train.run`; the same holds for the other six.
"""
