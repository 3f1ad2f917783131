# usersd — one-command setup on a fresh Debian machine (run as root, or with sudo available).
#   make run    install dependencies, build, start usersd in the foreground on ./var (development)
#   make test   install dependencies, build, run every test (unit, sanitizer unit, integration)

SHELL := /bin/bash
.DEFAULT_GOAL := build

BUILD_DIR ?= build
ASAN_DIR ?= build-asan
VENV ?= $(BUILD_DIR)/venv
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

APT_PACKAGES := build-essential cmake pkg-config ca-certificates curl git \
  libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev \
  libmongoc-dev libbson-dev libsodium-dev nlohmann-json3-dev libcli11-dev \
  libspdlog-dev libfmt-dev doctest-dev libsqlite3-dev sqlite3 \
  python3 python3-venv python3-pip wrk procps iproute2

.PHONY: deps build run test unit-test asan-test integration-test venv bench clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi

$(BUILD_DIR)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release

build: $(BUILD_DIR)/Makefile
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: deps build
	mkdir -p var
	./$(BUILD_DIR)/usersd start --foreground --config etc/usersd.development.json

unit-test: build
	./$(BUILD_DIR)/unit_tests

asan-test:
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DUSERSD_SANITIZE=ON -DUSERSD_UNIT_TESTS_ONLY=ON
	cmake --build $(ASAN_DIR) -j $(JOBS) --target unit_tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./$(ASAN_DIR)/unit_tests

venv: $(VENV)/.installed
$(VENV)/.installed: tests/integration/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/integration/requirements.txt
	touch $@

# The integration suite runs in a private network namespace: loopback only, nothing it binds can clash
# with the host, and net.ipv4.tcp_migrate_req=1 as on our AMI (queued connections of a closing
# SO_REUSEPORT listener move to a sibling) without changing the host's own setting. Needs root.
integration-test: build venv
	@command -v unshare >/dev/null || { echo "integration-test: unshare (util-linux) is required" >&2; exit 1; }
	unshare --net sh -c 'ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req=1 && \
	  USERSD_BIN=$(CURDIR)/$(BUILD_DIR)/usersd $(VENV)/bin/python -m pytest -q tests/integration'

test: deps build unit-test asan-test integration-test

bench: deps build
	bench/bench_api.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR)
