"""Independent judges of what the models generate: an image classifier (recognition rate, Fréchet
distance); for audio, speaker and content classifiers and a pitch tracker; and the scores of a prior's samples
by them."""

from vqvae.judges.audio import SpeakerClassifier, judge_conversion
from vqvae.judges.features import log_mel_course, log_mel_stats, pitch_hz
from vqvae.judges.image import ImageClassifier, accuracy, judge, predict, train_classifier
from vqvae.judges.samples import score_audio_prior, score_image_samples

__all__ = ["ImageClassifier", "SpeakerClassifier", "accuracy", "judge", "judge_conversion", "log_mel_course",
           "log_mel_stats", "pitch_hz", "predict", "score_audio_prior", "score_image_samples",
           "train_classifier"]
