# `make demo` and `make test` each set everything up on a fresh machine: a .venv with torch 2.13.0
# (CPU build) and this package, Fashion-MNIST and espeak-ng (Debian packages, when root with apt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO := runs/demo
VQ := $(VENV)/bin/vqvae
AUDIO := runs/demo-audio

.PHONY: demo demo-audio demo-conversion demo-speech test bench gpu-check data clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's dataset-fashion-mnist (images), espeak-ng (the synthesised speech corpus) and chromium (the browser
# the report test opens reports in; optional: without it that test is skipped), when missing.
data:
	@missing=""; \
	[ -e $(FMNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing (not root with apt-get: Fashion-MNIST will be downloaded to ~/.cache/vqvae;"; \
	    echo "  install espeak-ng yourself for the speech corpus)"; \
	  fi; \
	fi
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium (the report test opens reports in it)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "chromium could not be installed: the browser test will be skipped"; \
	fi

test: $(STAMP) data
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# The whole pipeline of the paper on Fashion-MNIST: autoencoder (with a pixel likelihood, so that bits/dim are
# real) -> codes (encoded once, cached) -> class-conditional Gated PixelCNN prior (trained with class dropout)
# -> samples decoded to images, drawn with classifier-free guidance 2.5 and top-k 100 (the setting measured best
# in docs/priors.md) -> judged by a classifier trained on real images.
SAMPLING := --guidance 2.5 --top-k 100
demo: $(STAMP) data
	$(VQ) train --out $(DEMO)/vqvae --overwrite model.recon_loss=logistic
	$(VQ) evaluate $(DEMO)/vqvae --split test --json
	$(VQ) train-prior $(DEMO)/vqvae --out $(DEMO)/prior --overwrite
	$(VQ) evaluate-prior $(DEMO)/prior --split test --json
	$(VQ) sample $(DEMO)/prior --per-class 10 --seed 0 $(SAMPLING) --out $(DEMO)/samples.png --overwrite
	$(VQ) sample $(DEMO)/prior --per-class 100 --seed 1 $(SAMPLING) --out $(DEMO)/samples.npz --overwrite
	$(VQ) train-classifier --out $(DEMO)/classifier --overwrite
	$(VQ) score $(DEMO)/samples.npz --classifier $(DEMO)/classifier --json --out $(DEMO)/prior/score.json --overwrite
	@echo "demo outputs: $(DEMO)/vqvae (autoencoder: checkpoint, metrics.csv, eval.json, reconstructions.png, tb/),"
	@echo "              $(DEMO)/prior (prior: checkpoint, metrics.csv, eval.json, score.json of its samples, tb/),"
	@echo "              $(DEMO)/samples.png (one row per class), $(DEMO)/samples.npz, $(DEMO)/classifier (the judge)"
	@$(VQ) report $(DEMO)/vqvae $(DEMO)/prior $(DEMO)/classifier --out $(DEMO)/report.html --overwrite

# The paper's audio pipeline on a speech corpus synthesised here with espeak-ng (8 voices): the audio VQ-VAE
# (WaveNet decoder on codes + speaker), the same WaveNet without codes for the same budget (the baseline its
# bits per sample are compared with), the WaveNet prior over the codes, then WAV files: reconstructions,
# speaker conversions (judged by a speaker classifier) and samples from the prior.
demo-audio: $(STAMP) data
	$(VQ) data speech --out $(AUDIO)/speech --overwrite --quiet
	$(VQ) audio train --data $(AUDIO)/speech --out $(AUDIO)/vqvae --overwrite --quiet
	$(VQ) audio train --data $(AUDIO)/speech --out $(AUDIO)/wavenet_without_codes --overwrite --quiet \
	    audio.use_codes=false audio.speaker_conditioning=false
	$(VQ) audio evaluate $(AUDIO)/vqvae --json
	$(VQ) audio evaluate $(AUDIO)/wavenet_without_codes --json
	$(VQ) audio train-prior $(AUDIO)/vqvae --out $(AUDIO)/prior --overwrite --quiet
	$(VQ) audio conversion $(AUDIO)/vqvae --pairs 8 --seconds 1 --wav-dir $(AUDIO)/wav --overwrite --json
	$(VQ) audio sample $(AUDIO)/prior --speaker us_f2 --seconds 1 --out $(AUDIO)/wav/sample_us_f2.wav --overwrite
	$(VQ) audio sample $(AUDIO)/prior --speaker gb_m3 --seconds 1 --out $(AUDIO)/wav/sample_gb_m3.wav --overwrite
	@echo "demo-audio outputs: $(AUDIO)/speech (corpus), $(AUDIO)/vqvae, $(AUDIO)/wavenet_without_codes, $(AUDIO)/prior"
	@echo "                    (checkpoints, metrics.csv, eval.json, tb/), $(AUDIO)/wav (inputs, reconstructions,"
	@echo "                    conversions, prior samples)"
	@$(VQ) report $(AUDIO)/vqvae $(AUDIO)/wavenet_without_codes $(AUDIO)/prior --media $(AUDIO)/wav \
	    --out $(AUDIO)/report.html --overwrite

# Speaker conversion that works (about 1 hour): the speech_conversion recipe (256x bottleneck, instance norm, 50
# minutes of training) on the same corpus, judged on 32 test utterances by the speaker classifier and by pitch.
demo-conversion: $(STAMP) data
	test -d $(AUDIO)/speech || $(VQ) data speech --out $(AUDIO)/speech --quiet
	$(VQ) audio train --config speech_conversion --data $(AUDIO)/speech --out $(AUDIO)/conversion --overwrite --quiet
	$(VQ) audio evaluate $(AUDIO)/conversion --json
	$(VQ) audio conversion $(AUDIO)/conversion --pairs 32 --seconds 1 --wav-dir $(AUDIO)/conversion_wav --overwrite --json
	@$(VQ) report $(AUDIO)/conversion --media $(AUDIO)/conversion_wav --out $(AUDIO)/conversion_report.html --overwrite

# Real speech (about 25 minutes): the Free Spoken Digit Dataset (six speakers, digits 0-4, 8 kHz; from
# ../shared/data when it is there, else downloaded) -> the fsdd recipe (the spectral decoder, 20 minutes) -> the
# class-conditional WaveNet prior (speaker + digit, 2 minutes, the digit dropped 10% of the time) -> reconstructions
# and conversions of all 150 test takes and 150 prior samples (temperature 0.7, classifier-free guidance 3 on the
# digit), judged by a speaker classifier, a digit classifier, the pitch,
# STOI and PESQ, the classifiers trained on the corpus's real train takes; then audio evaluate (code usage, the
# speaker probe).
FSDD := runs/demo-speech
FSDD_SRC := $(wildcard ../shared/data/fsdd-digits0-4)
demo-speech: $(STAMP)
	$(VQ) data fsdd --out $(FSDD)/fsdd --overwrite $(if $(FSDD_SRC),--from $(FSDD_SRC))
	$(VQ) audio train --config fsdd --data $(FSDD)/fsdd --out $(FSDD)/vqvae --overwrite --quiet
	$(VQ) audio train-prior $(FSDD)/vqvae --config fsdd_prior --out $(FSDD)/prior --overwrite --quiet
	$(VQ) audio conversion $(FSDD)/vqvae --pairs 150 --seconds 3 --wav-dir $(FSDD)/wav --overwrite --json
	$(VQ) audio score $(FSDD)/prior --per 5 --temperature 0.7 --guidance 3 --wav-dir $(FSDD)/samples --overwrite --json
	$(VQ) audio evaluate $(FSDD)/vqvae
	@echo "demo-speech outputs: $(FSDD)/fsdd (corpus), $(FSDD)/vqvae and $(FSDD)/prior (checkpoints, metrics.csv,"
	@echo "                     eval.json, tb/), $(FSDD)/wav (inputs, reconstructions, conversions), $(FSDD)/samples"
	@$(VQ) report $(FSDD)/vqvae $(FSDD)/prior --media $(FSDD)/wav --media $(FSDD)/samples --out $(FSDD)/report.html \
	    --overwrite

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/quantizer_speed.py

# On a machine with a CUDA GPU: the device-parametrised tests on CUDA (one process; two NCCL processes under torchrun
# when two GPUs exist) and the training-speed benchmark in fp32 and bf16 (img/s). Without CUDA: one line, exit 0.
GPUS = $(shell $(PY) -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null)
gpu-check: $(STAMP) data
	@if [ "$(GPUS)" = "0" ] || [ -z "$(GPUS)" ]; then \
	  echo "gpu-check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check"; exit 0; fi; \
	set -e; \
	$(PY) -c "import torch; print('gpu-check:', torch.cuda.get_device_name(0), 'x', torch.cuda.device_count())"; \
	$(PY) -m pytest -q tests/test_devices.py tests/test_quantize.py tests/test_model.py; \
	if [ "$(GPUS)" -ge 2 ]; then \
	  $(PY) -m torch.distributed.run --standalone --nproc_per_node 2 -m vqvae train --device cuda --steps 200 \
	    --out runs/gpu-check/ddp --overwrite --quiet --json; \
	fi; \
	$(PY) benchmarks/train_speed.py --device cuda --only "eager fp32" "eager bf16 channels_last" --psnr-steps 0
