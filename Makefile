# difphys: two commands do all set-up on a fresh machine.
#   make demo   create .venv if missing, run the main job on the embedded default
#   make test   create .venv if missing, run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.difphys-installed

.PHONY: demo test test-latest test-slow test-gpu bench bench-part bench-foundation lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench,data,parquet,hep]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/difphys demo

# two pytest workers: most tests are bound by single-threaded XLA compilation
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

# the suite against the newest versions the registries serve (no constraints.txt), in its own
# environment: what a fresh `pip install difphys` resolves today
LATEST = .venv-latest
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev,bench,data,parquet,hep]"
	$(LATEST)/bin/python -m pip list --outdated
	$(LATEST)/bin/python -m pytest -q -n 2 --dist worksteal

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

# GPU against CPU (skips without a GPU); benchmarks/gpu_check.sh runs these and the benchmarks
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu tests/test_gpu.py

bench: $(STAMP)
	$(PY) benchmarks/phasespace.py
	$(PY) benchmarks/matrix_elements.py
	$(PY) benchmarks/vertex_fit.py
	$(PY) benchmarks/stochad.py
	$(PY) benchmarks/sampling.py --png sampling.png

# label efficiency of supervised and masked-particle pretraining (quick mode, ~20 min on 2
# cores; drop --quick for the full protocol)
bench-foundation: $(STAMP)
	$(PY) benchmarks/label_efficiency.py --quick

# ParT throughput against weaver-core's PyTorch ParticleTransformer (CPU torch 2.13.0 wheel),
# under three glibc allocator settings (both frameworks page-fault on fresh buffers by
# default; docs/nn.md): glibc defaults, transparent huge pages, and heap reuse + huge pages
HEAP_REUSE = glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
bench-part: $(STAMP)
	$(PY) -m pip install --quiet -e ".[torch-bench]"
	GLIBC_TUNABLES= $(PY) benchmarks/part_throughput.py
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(PY) benchmarks/part_throughput.py
	GLIBC_TUNABLES=$(HEAP_REUSE) $(PY) benchmarks/part_throughput.py

lint: $(STAMP)
	$(VENV)/bin/ruff check difphys tests benchmarks

clean-venv:
	rm -rf $(VENV)
