# Entry points for a fresh machine: `make repro` (pipeline), `make test` (tests; CI runs it) and `make test-fast`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install repro test test-fast bench lock clean-venv

install: $(STAMP)

# torch first, pinned, so pip takes the local wheel instead of resolving a CUDA build from scratch;
# everything else under the lock file as a constraint so nothing backtracks.
$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements/lock.txt torch torchvision
	$(PY) -m pip install --quiet -c requirements/lock.txt -e '.[test]'
	@touch $(STAMP)

# outputs are copied into the DVC cache on filesystems without reflinks; relinking replaces the
# workspace copies by hard links, so the stamps and cache are not kept on disk twice
repro: install
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/dvc repro
	$(VENV)/bin/dvc checkout --relink --quiet

# one worker per core (pytest-xdist), tests handed out as workers free up: the end-to-end tests
# spend much of their time in subprocesses and JVM start-up, so two workers on two cores finish
# the suite ~1.3x sooner than one
test: install
	$(PY) -m pytest -q -n auto --dist worksteal

# what to run before each commit: everything but the tests marked slow
test-fast: install
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow"

bench: install
	$(PY) benchmarks/bench_injection.py
	$(PY) benchmarks/bench_cache.py
	$(PY) benchmarks/bench_train.py --steps 2
	$(PY) benchmarks/bench_codec.py
	$(PY) benchmarks/bench_stamps.py
	$(PY) benchmarks/bench_compile.py
	$(PY) benchmarks/bench_fresh_training.py

lock: install
	@{ head -2 requirements/lock.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^dhs'; } > requirements/lock.tmp && mv requirements/lock.tmp requirements/lock.txt

clean-venv:
	rm -rf $(VENV)
