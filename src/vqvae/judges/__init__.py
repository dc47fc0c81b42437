"""Independent judges of what the models generate: an image classifier (recognition rate, Fréchet distance) and,
for audio, a speaker classifier and a pitch tracker."""

from vqvae.judges.audio import SpeakerClassifier, judge_conversion, log_mel_stats, mel_filterbank, pitch_hz
from vqvae.judges.image import Classifier, accuracy, judge, predict, score_samples, train_classifier

__all__ = ["Classifier", "SpeakerClassifier", "accuracy", "judge", "judge_conversion", "log_mel_stats",
           "mel_filterbank", "pitch_hz", "predict", "score_samples", "train_classifier"]
