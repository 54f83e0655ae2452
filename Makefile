# Two commands do everything on a fresh machine (each sets itself up first):
#   make book   – execute every chapter with papermill on the bundled offline model, build the book
#   make test   – run the unit tests, then build and check the executed book (strict audit),
#                 rehearse another CPU's numeric path and other platforms' installs and, beside
#                 it, execute every chapter once more the way a Colab reader runs it (what CI
#                 runs; see `book-side` and `online`)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BOOK_FLAGS ?=
# The online rehearsal: ViT-B/32's architecture with random weights saved by the run itself, and
# small copies of Conceptual Captions, Tiny-ImageNet and Flickr8k in their real layouts.
ONLINE := $(CURDIR)/_build/online
ONLINE_MODEL ?= ViT-B-32-quickgelu
# torch threads of the online chapters (`make test` runs them beside the book build, one core each)
ONLINE_THREADS ?= 2

.PHONY: setup test unit book book-side other-path book-smoke online bench clean platforms student

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

unit: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not book"

# the book side and the online rehearsal side by side, one CI core each (one thread each:
# more threads than cores make OpenMP spin and both builds crawl)
test: unit
	OMP_NUM_THREADS=1 $(MAKE) -j2 book-side online ONLINE_THREADS=1

# make test's book side, one after the other: the strict book build (a stored value the audit
# cannot reproduce fails it), every results page seen whole at 1280 px in headless Chromium
# (scripts/check_pages.py; Debian's `chromium`), the tests that execute chapters or build HTML
# (`-m book`), the unit
# tests and the audit once more on a second numeric path, and the install resolved for the
# platforms this machine is not (`make platforms` checks all twelve targets)
PLATFORMS_IN_TEST ?= macos-arm64 windows-x86_64 linux-aarch64/py3.12
book-side: setup
	$(PY) scripts/build_book.py --strict $(BOOK_FLAGS)
	$(PY) scripts/build_book.py --student
	$(PY) scripts/check_pages.py --dir _build/html/book
	$(PY) -m pytest -q -m book
	$(MAKE) other-path
	$(PY) scripts/check_platforms.py --only $(PLATFORMS_IN_TEST) --jobs 2

# Another machine, rehearsed: ATen's portable kernels (no AVX2/AVX-512) and MKL's compatible
# mode (the settings that reproduced an Intel Xeon's failures on this AMD EPYC); the tolerances
# are data/results/tolerances.json (scripts/measure_tolerances.py)
OTHER_PATH ?= ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE
other-path: setup
	env $(OTHER_PATH) $(PY) -m pytest -q -m "not book" -p no:cacheprovider
	env $(OTHER_PATH) OMP_NUM_THREADS=1 $(PY) -m nibcore.store audit

online: setup
	$(PY) scripts/make_fixtures.py $(ONLINE)/data --checkpoint $(ONLINE)/$(ONLINE_MODEL)-random.pt \
		--model $(ONLINE_MODEL)
	NIB_DATA=$(ONLINE)/data $(PY) scripts/build_book.py --smoke --no-html --no-audit --out $(ONLINE) \
		--param MODEL=$(ONLINE_MODEL) --param PRETRAINED=$(ONLINE)/$(ONLINE_MODEL)-random.pt \
		--param THREADS=$(ONLINE_THREADS)

book: setup
	$(PY) scripts/build_book.py $(BOOK_FLAGS)

# the student edition (_build/student/html) from the last build's executed notebooks, without
# re-executing them: no solutions and no lecturer's guide on any page, download or Colab target
# (Colab opens the committed student/ notebooks: python -m nibcore.book.student sync)
student: setup
	$(PY) scripts/build_book.py --student

book-smoke: setup
	$(PY) scripts/build_book.py --smoke

bench: setup
	$(PY) benchmarks/bench_nib.py

# requirements.txt against PyPI for Linux x86-64 / aarch64, macOS arm64 and Windows x86-64, each
# with Python 3.10, 3.11 and 3.12 (scripts/check_platforms.py; downloads ~20 GB, deletes it)
platforms: setup
	$(PY) scripts/check_platforms.py

clean:
	rm -rf _build book/_executed
