"""Deprecated: moved to :mod:`vqvae.data.audio.synthesis`. Importing this name gives that module itself (every name, and
monkeypatching works), for one release."""

import importlib
import sys
import warnings

warnings.warn("vqvae.data.speech is deprecated: use vqvae.data.audio.synthesis", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("vqvae.data.audio.synthesis")
