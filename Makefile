# Two commands do everything on a fresh machine (each sets itself up first):
#   make book   – execute every chapter with papermill on the bundled offline model, build the book
#   make test   – run the unit tests, then build and check the executed book (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BOOK_FLAGS ?=

.PHONY: setup test unit book book-smoke bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

unit: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test: unit
	$(PY) scripts/build_book.py $(BOOK_FLAGS)

book: setup
	$(PY) scripts/build_book.py $(BOOK_FLAGS)

book-smoke: setup
	$(PY) scripts/build_book.py --smoke

bench: setup
	$(PY) benchmarks/bench_nib.py

clean:
	rm -rf _build book/_executed
