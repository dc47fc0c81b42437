"""Speech: WAV files (:mod:`~vqvae.data.audio.wav`), speaker-folder corpora (:mod:`~vqvae.data.audio.corpus`) and
the espeak-ng corpus synthesiser (:mod:`~vqvae.data.audio.synthesis`)."""

from vqvae.data.audio.corpus import (SpeechDataset, WaveFiles, corpus_speakers, crop_starts, crops, load_speech,
                                     random_crops, split_files)
from vqvae.data.audio.wav import read_utterance, read_wav, resample, write_wav

__all__ = ["SpeechDataset", "WaveFiles", "corpus_speakers", "crop_starts", "crops", "load_speech", "random_crops",
           "read_utterance", "read_wav",
           "resample", "split_files", "write_wav"]
