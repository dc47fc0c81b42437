"""Deprecated: moved to :mod:`vqvae.data.images.folder`. Importing this name gives that module itself (every name, and
monkeypatching works), for one release."""

import importlib
import sys
import warnings

warnings.warn("vqvae.data.folder is deprecated: use vqvae.data.images.folder", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("vqvae.data.images.folder")
