# edgepack developer entry points. `make demo` and `make test` are the two README commands.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
EXTRAS ?= torch,tensorflow,tflite,coreml,jax,npu,report,test,zoo,executorch

.PHONY: setup demo test test-fast test-zoo lint bench zoo clean

$(BIN)/.installed: pyproject.toml constraints.txt converters/onnx_tools.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	# onnx2tf (ONNX -> TFLite, ONNX -> CoreML) hard-pins old TensorFlow/numpy: installed without its declared
	# dependencies, from the list (and the one onnx2tf pin) in converters/onnx_tools.py
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt \
	    $$($(BIN)/python -m edgepack.converters.onnx_tools)
	touch $@

setup: $(BIN)/.installed

# The main job on the built-in digits sample: build fp32 + int8 ONNX bundles, bench both here, report.
demo: setup
	mkdir -p $(OUT)
	$(BIN)/edgepack build samples/digits/model.py:build_model --input image:1x1x8x8 \
	    --eval samples/digits/eval.npz -o $(OUT)/digits.onnx.fp32.edgepack
	$(BIN)/edgepack build samples/digits/model.py:build_model --input image:1x1x8x8 --quantize int8 \
	    --calibration samples/digits/calib.npz --eval samples/digits/eval.npz -o $(OUT)/digits.onnx.int8.edgepack
	$(BIN)/edgepack bench $(OUT)/digits.onnx.fp32.edgepack $(OUT)/digits.onnx.int8.edgepack --device local \
	    --json $(OUT)/digits.bench.json --markdown $(OUT)/digits.bench.md

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# ruff (lint + format) and mypy --strict on edgepack/ and device_runners/, as configured in pyproject.toml.
lint: setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

# The whole model zoo as tests (183 cases, ~1.7 h of builds on 2 cores); `make test` runs only its CI subset.
test-zoo: setup
	EDGEPACK_ZOO=all $(BIN)/python -m pytest -m zoo tests/test_zoo.py

# The zoo matrix: benchmarks/zoo-results.json and the table in README.md (## Benchmarks).
zoo: setup
	$(BIN)/python benchmarks/zoo.py

bench: setup
	$(BIN)/python benchmarks/runner_overhead.py
	$(BIN)/python benchmarks/onnx_quant.py
	$(BIN)/python benchmarks/tflite_quant.py
	$(BIN)/python benchmarks/layout.py
	$(BIN)/python benchmarks/gate_power.py
	$(BIN)/python benchmarks/sustained_overhead.py
	$(BIN)/python benchmarks/runtimes.py

clean:
	rm -rf $(OUT) build dist *.egg-info
