"""The application over the ``tftriplet`` library: data, input pipelines, network, training,
evaluation, pictures and the commands. Installed, it is ``tftriplet_app``."""
