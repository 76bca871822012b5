"""Image plugin for mmargin: data loaders, small reference models and their training.

``mmargin_image.data`` reads images (scikit-learn digits, MNIST, an image folder, ``.npz`` /
``.pt`` tensors) into :class:`mmargin.data.Dataset`; ``mmargin_image.models`` defines the
reference architectures and loads their committed weights; ``python -m mmargin_image.train``
rebuilds those weights deterministically. Importing this package imports nothing heavy.
"""
