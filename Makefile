# Two entry points, each self-sufficient on a fresh machine with Python 3.11:
#   make study   set up .venv, then run the study on the bundled IMDB data (profile chosen by the device)
#   make test    set up .venv, then run the whole test suite (make test-fast: the quick lane for editing)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: study test test-fast lint setup browser mutation clean-cache powered-study replication-study cpu-study pretraining-study pretraining-long-study final-study mutation-alone gpu-check

setup: $(STAMP)

# requirements-dev.txt includes requirements-bench.txt (which includes requirements.txt): the package, the
# bench's optional Hugging Face references, and Playwright for the browser test.
$(STAMP): requirements.txt requirements-bench.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

study: $(STAMP)
	$(PY) -m nanogpt study $(ARGS)

# ruff first (rules and why in pyproject.toml): a finding fails the target before the suite's minutes are spent
lint: $(STAMP)
	$(PY) -m ruff check nanogpt tests notebooks

# Two xdist workers, a test file each at a time (a file's module fixtures are built once): on 2 cores the suite's
# waits (kernels, subprocesses, servers) overlap, 554 s against 756 s one after another (measured here). Each worker
# runs torch on its share of the cores (tests/conftest.py): 497 s for 612 tests, against 679 s at a thread per core.
test: $(STAMP) browser lint
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

# Debian's Chromium for the browser test (tests/test_browser.py), installed once, when missing (needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium >/dev/null; } || { echo "make browser: could not install Debian's chromium \
	(apt-get needs root); install it and run make test again" >&2; exit 1; }

# The edit loop: everything but the tests marked slow (the study, the bench, subprocesses, long runs).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

# The committed powered study (profile fast, about 18 s a run on 2 cores): in chunks of 20 seeds, each chunk
# training the fixed design (CE, BCE), the paired arms (CE with a paired head, BCE with CE's head step) and 6
# seeds of the split-varied design, so that a study stopped at any point is balanced. Finished runs are skipped:
# run it again to go on. Weights are not kept (--keep none): the statistics need the rows and predictions only.
POWERED := --profile fast --no-notebooks --keep none --quiet
powered-study: $(STAMP)
	for lo in 0 20 40 60 80; do hi=$$((lo + 19)); r=$$((lo * 6 / 20)); \
	  $(PY) -m nanogpt study $(POWERED) --design fixed --seeds $$lo-$$hi && \
	  $(PY) -m nanogpt study $(POWERED) --design paired --losses ce,bce-head2x --seeds $$lo-$$hi && \
	  $(PY) -m nanogpt study $(POWERED) --design resplit --seeds $$r-$$((r + 5)) || exit 1; \
	done

# The stability replication (results/analysis-plan-2.json, committed before its first run): 100 fresh seeds per
# loss of the fixed design, profile fast (about 25 s a run on 2 cores), seed by seed; each run's row and
# predictions land in runs.csv and val-predictions-fast.npz as it finishes. Finished runs are skipped: run it again
# to go on.
replication-study: $(STAMP)
	$(PY) -m nanogpt study --profile fast --design fixed --seeds 100-199 --no-notebooks --keep none

# The `cpu` profile's study at 15 seeds per loss, in this machine's precision (bf16 with AVX512-BF16, about 2.2 min
# a run; fp32 on AVX2-only CPUs, about 8 min a run): seed by seed, finished runs skipped, so it can be built up
# over several sittings. Then the notebooks on that population (all 30 runs found finished: about a minute).
cpu-study: $(STAMP)
	$(PY) -m nanogpt study --profile cpu --seeds 0-14 --no-notebooks --keep none $(ARGS)
	$(PY) -m nanogpt study --profile cpu --seeds 0-14 --keep none $(ARGS)

# The pre-training study (notebook 06): backbones of profile lm-cpu (seeds 0-2, ~27 min each on 2 AVX2 cores),
# CE and BCE from scratch and from backbone 0 (profile ft, seeds 0-4), CE seed 0 from the other backbones.
# Finished backbones and runs are reused: run it again to go on after a stop.
pretraining-study: $(STAMP)
	$(PY) -m nanogpt study --pretraining --profile ft $(ARGS)

# The second pre-training study (docs/pretraining.md): backbone lm-cpu seed 0 pre-trained on 65.6M tokens (8,000
# steps, about an hour on 2 cores), fine-tuned with CE and BCE over seeds 0-4 on random windows and scored on whole
# reviews (recipe ft-long); scratch runs are the first study's. Resumable like the first: run it again to go on.
pretraining-long-study: $(STAMP)
	$(PY) -m nanogpt study --pretraining --profile ft --recipe ft-long $(ARGS)

# Plan 3's final comparison (results/analysis-plan-3.json): the recipe the development slice chose, ft-long with
# GPT-1's auxiliary language-model loss at 0.5 (docs/levers.md). Backbones lm-cpu seeds 0-2 at 65.6M tokens with
# their next-token output (about 2 hours each on 2 AVX2 cores), CE and BCE seeds 0-4 from backbone 0, CE seeds 0-4
# from backbones 1 and 2, and the scratch runs, in results/final: a population of its own. Resumable like the others.
final-study: $(STAMP)
	$(PY) -m nanogpt study --pretraining --profile ft --recipe ft-long-lm --out results/final $(ARGS)

# On a CUDA machine: the CUDA path checked in a few minutes (compiled vs eager, bf16 + fused AdamW, a short paper
# run, the paper study's predicted wall time, the bench's GPU section); report in results/gpu-check.json.
# Without CUDA it says so in one line and exits 77 (skipped).
gpu-check: $(STAMP)
	$(PY) -m nanogpt gpu-check $(ARGS)

# Mutation testing (mutmut, configured in pyproject.toml's [tool.mutmut]): the modules that guard data and numbers,
# each mutant run against the tests that reach it. Not part of `make test`: stats.py alone is 924 mutants, 6-12
# minutes on 2 cores. The triage of the survivors is in docs/testing.md. `make mutation ARGS=<mutant name>`
# runs one mutant again. One mutant at a time: with two at once, mutants that fail their tests when run alone
# were reported as survivors (docs/testing.md: a survivor counts only after it survives alone).
mutation: $(STAMP)
	$(PY) -m mutmut run --max-children 1 $(ARGS)
	$(PY) -m mutmut results

# One survivor run alone, outside mutmut's fork server, against the tests that should catch it (slow ones included):
# make mutation-alone MUTANT=nanogpt.run.train.x_train_claimed__mutmut_800 TESTS="tests/test_train.py -k curve"
# A test failure here means the mutant is killed (docs/testing.md: what the ledgers in docs/mutation/ record).
mutation-alone: $(STAMP)
	@test -n "$(MUTANT)" && test -n "$(TESTS)" && test -d mutants || { echo "make mutation-alone: give MUTANT=<name> \
	and TESTS=<pytest arguments>, after make mutation has written mutants/" >&2; exit 2; }
	cd mutants && MUTANT_UNDER_TEST=$(MUTANT) OMP_NUM_THREADS=1 ../$(PY) -m pytest -x -q -p no:cacheprovider \
	  -o addopts= $(TESTS)

clean-cache:
	rm -rf data/cache
