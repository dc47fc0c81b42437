"""Speech: WAV files (:mod:`~vqvae.data.audio.wav`), speaker-folder corpora with optional per-utterance
classes (:mod:`~vqvae.data.audio.corpus`), the espeak-ng corpus synthesiser
(:mod:`~vqvae.data.audio.synthesis`) and the Free Spoken Digit Dataset's arrangement
(:mod:`~vqvae.data.audio.fsdd`)."""

from vqvae.data.audio.corpus import (
                                     UTTERANCES,
                                     SpeechDataset,
                                     WaveFiles,
                                     corpus_speakers,
                                     crop_starts,
                                     crops,
                                     load_speech,
                                     random_crops,
                                     read_utterances,
                                     split_files,
                                     write_utterances,
)
from vqvae.data.audio.wav import read_utterance, read_wav, resample, whole_codes, write_wav

__all__ = ["UTTERANCES", "SpeechDataset", "WaveFiles", "corpus_speakers", "crop_starts", "crops",
           "load_speech", "random_crops", "read_utterance", "read_utterances", "read_wav", "resample",
           "split_files", "whole_codes", "write_utterances", "write_wav"]
