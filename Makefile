# Quick start: `make run` (deps, build, install, serve hello world) and
# `make test` (deps, build, every test). Everything else is a step of those.
PREFIX ?= /usr/local
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 20
PYTHON ?= $(shell command -v python3)

.PHONY: all deps build build-asan install run run-llm test test-c test-asan fuzz bench bench-llm bench-llama bench-disagg clean

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX)

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DPython3_EXECUTABLE=$(PYTHON) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DDYN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DPython3_EXECUTABLE=$(PYTHON) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

install: build
	cmake --install $(BUILD)
	@ldconfig 2>/dev/null || true

run: install
	@bash examples/hello_world/run.sh

# A real model (SmolLM2-135M, fetched once into ~/.cache/dynamo/models) on
# two llama.cpp workers behind the KV router, on port 8000.
run-llm: install
	@bash scripts/fetch_model.sh smollm2-135m >/dev/null
	dynamo serve examples/llm/graphs/agg_router.py:Frontend \
	  -f examples/llm/configs/agg_router_llama.yaml

test-c: build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 120

test-asan: build-asan build
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j 2 --timeout 300 -LE python-ext
	@# The LLM graphs (aggregated and disaggregated) with the ASan CLI and
	@# services; the test process itself needs the normal build's Python
	@# extension (an uninstrumented python3 cannot load the ASan one), which
	@# talks to them over sockets only.
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  DYN_BUILD=$(abspath $(BUILD)) DYN_BIN=$(abspath $(ASAN_BUILD))/dynamo \
	  DYN_LLM_LIB=$(abspath $(ASAN_BUILD))/lib/libdynamo_llm.so \
	  CONTROL_PUT=$(abspath $(BUILD))/tests/llm/control_put \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/llm/test_llm_graph.py tests/llm/test_disagg_graph.py

fuzz: deps
	cmake -S fuzz -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	bash fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test: test-c test-asan fuzz
	@echo "make test: all suites passed"

bench: build
	bash bench/run.sh $(BUILD)

bench-llm: build
	bash bench/llm/run.sh $(BUILD)

# dynamo's llama.cpp engine against llama-server and llama-batched-bench,
# same model and llama.cpp source (docs/benchmarks.md; about 15 minutes on 2 cores).
bench-llama: build
	bash bench/llm/llama.sh $(BUILD)

bench-disagg: build
	bash bench/llm/disagg.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
