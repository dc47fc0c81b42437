"""Deprecated: the judges moved to :mod:`vqvae.judges` (images: :mod:`vqvae.judges.image`; speakers and pitch:
:mod:`vqvae.judges.audio`) and ``frechet_distance`` to :mod:`vqvae.metrics`. Re-exported for one release."""

import warnings

from vqvae.judges.audio import SpeakerClassifier, log_mel_stats, mel_filterbank, pitch_hz
from vqvae.judges.image import Classifier, accuracy, judge, predict, train_classifier
from vqvae.metrics import frechet_distance

warnings.warn("vqvae.classifier is deprecated: use vqvae.judges (and vqvae.metrics.frechet_distance)",
              DeprecationWarning, stacklevel=2)

__all__ = ["Classifier", "SpeakerClassifier", "accuracy", "frechet_distance", "judge", "log_mel_stats",
           "mel_filterbank", "pitch_hz", "predict", "train_classifier"]
