# Skiff's entry points. See README.md.
#   make build   configure and build into build/ (RelWithDebInfo, Ninja, ccache)
#   make test    install dependencies, build, run the unit, privileged, cluster and vm tiers
#   make up      build and start a local cluster in network namespaces of its own
#   make down    stop it and remove everything it created
#   make deb     build the .deb packages into build/deb/
#   make bench NAME=store-write   run one benchmark (bench/run --list names them)
SHELL := /bin/bash
BUILD_DIR ?= build

.PHONY: all build test up down deb bench deps clean

all: build

deps:
	scripts/install-deps.sh

build:
	scripts/build.sh $(BUILD_DIR)

test:
	scripts/test.sh

up:
	scripts/up.sh

down:
	scripts/down.sh

deb:
	scripts/build.sh $(BUILD_DIR)
	packaging/deb/build-debs.sh $(BUILD_DIR)

bench:
	bench/run $(NAME)

clean:
	rm -rf build build-asan build-release
