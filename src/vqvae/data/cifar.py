"""Deprecated: moved to :mod:`vqvae.data.images.cifar`. Importing this name gives that module itself (every name, and
monkeypatching works), for one release."""

import importlib
import sys
import warnings

warnings.warn("vqvae.data.cifar is deprecated: use vqvae.data.images.cifar", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("vqvae.data.images.cifar")
