# Ferry's one entry point (the kubebuilder convention). `make help` lists targets.
SHELL := /bin/bash
BUILD_DIR ?= build
ASAN_BUILD_DIR ?= build-asan
JOBS ?= $(shell nproc)
CTEST := ctest --output-on-failure --no-tests=error -j$(JOBS)
export PATH := $(CURDIR)/.cache/bin:$(PATH)

.PHONY: images bench-e2e bench-engine bench-informer help setup build build-asan test test-unit test-asan test-toolchain \
        format-check format tidy demo clean

help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## Install and build every pinned dependency (idempotent, cached in ~/.cache/ferry).
	@hack/setup.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: $(BUILD_DIR)/build.ninja ## Build the binaries and tests.
	cmake --build $(BUILD_DIR) -j$(JOBS)

$(ASAN_BUILD_DIR)/build.ninja:
	cmake -S . -B $(ASAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFERRY_ASAN=ON

build-asan: $(ASAN_BUILD_DIR)/build.ninja ## Build the unit tests with AddressSanitizer + UBSan.
	cmake --build $(ASAN_BUILD_DIR) -j$(JOBS) --target unit-tests

test-unit: build ## Unit tests.
	cd $(BUILD_DIR) && $(CTEST) -L unit

test-asan: build-asan ## Unit tests under AddressSanitizer + UBSan.
	cd $(ASAN_BUILD_DIR) && LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp $(CTEST) -L unit

test-toolchain: build ## Pinned versions, criu check, CRIU TCP round trip.
	cd $(BUILD_DIR) && $(CTEST) -L toolchain

# The README's test command: everything, from a clean clone on a fresh machine.
# The pinned test tooling (CRIU, the Go-built Kubernetes binaries) builds
# beside the format check, the sanitizer tree and its unit tests, and the
# main tree (hack/beside.sh): none of those needs it, and on a cold 2-core
# machine the two halves take about as long each. A failure on either side
# stops both.
test: ## Setup, format check, sanitizer unit tests, then the whole suite.
	@hack/setup.sh build
	@hack/beside.sh 'hack/setup.sh tools' '$(MAKE) format-check test-asan build'
	cd $(BUILD_DIR) && $(CTEST)

bench-informer: setup build ## Informer sync and watch throughput vs kubectl (10,000 objects).
	FERRY_TOOL_BIN=$(CURDIR)/.cache/bin $(BUILD_DIR)/bench/bench-informer 10000 2>&1 | tee bench/results/informer-latest.txt

bench-engine: setup build ## Cold and PostCopy migration of 256 MiB/1 GiB/2 GiB runc containers vs raw criu dump+restore.
	FERRY_BENCH_DIR=/dev/shm FERRY_TOOL_BIN=$(CURDIR)/.cache/bin $(BUILD_DIR)/bench/bench-engine 256 1024 2048 2>&1 | tee bench/results/engine-latest.txt

bench-e2e: setup build ## Cold and PostCopy migration apply-to-Ready and freeze on the local cluster (64 MiB/512 MiB/1 GiB) vs delete-and-recreate.
	cmake --build $(BUILD_DIR) --target statekeeper
	STATEKEEPER=$(STATEKEEPER) bench/e2e/bench_e2e.sh 64 512 1024 2>&1 | tee bench/results/e2e-latest.txt

format-check: $(BUILD_DIR)/build.ninja ## Fail if clang-format would change any file.
	cmake --build $(BUILD_DIR) --target format-check

format: $(BUILD_DIR)/build.ninja ## Reformat the sources in place.
	cmake --build $(BUILD_DIR) --target format

tidy: build ## clang-tidy over Ferry's own sources.
	git ls-files --cached --others --exclude-standard '*.cpp' | grep -Ev '^tests/workloads/' | xargs clang-tidy -p $(BUILD_DIR) --quiet --extra-arg=-Wno-unknown-warning-option

images: setup ## Build the ferry-operator and ferry-agent images offline (Dockerfile).
	@hack/images/build.sh

demo: setup $(BUILD_DIR)/build.ninja ## Bring up the local cluster, install Ferry, migrate a stateful pod, print the evidence.
	cmake --build $(BUILD_DIR) --target statekeeper
	@STATEKEEPER=$(STATEKEEPER) hack/demo.sh

clean: ## Remove the build directories (not the toolchain cache).
	rm -rf $(BUILD_DIR) $(ASAN_BUILD_DIR)

# --- Local multi-node cluster (hack/cluster/README.md) -----------------------
.PHONY: cluster-up cluster-down cluster-load install-ferry test-e2e
STATEKEEPER := $(CURDIR)/$(BUILD_DIR)/tests/workloads/statekeeper

cluster-up: $(BUILD_DIR)/build.ninja ## Start the local 3-node cluster (idempotent); prints the kubeconfig path.
	cmake --build $(BUILD_DIR) --target statekeeper
	@STATEKEEPER=$(STATEKEEPER) hack/cluster/up.sh

cluster-down: ## Remove every container, network, route, mount and process of the local cluster.
	@hack/cluster/down.sh

install-ferry: ## Build the images and install Ferry into the running local cluster (deploy/).
	@hack/install-ferry.sh

cluster-load: ## Load local Docker images into every node: make cluster-load IMAGES="a:tag b:tag".
	@hack/cluster/load.sh $(IMAGES)

test-e2e: build ## End-to-end tests on the local cluster (brings it up first, down at the end).
	cd $(BUILD_DIR) && ctest --output-on-failure --no-tests=error -L e2e
