# weir: the two commands a fresh machine needs are `make run` and `make test`.

CARGO ?= cargo
DEMO ?= /tmp/weir-demo
export DEMO

.PHONY: run stop test lint bench build setup

## Mount a demo namespace (a local directory) at $(DEMO)/mnt.
run: setup
	$(CARGO) build --release --locked -p weir
	scripts/demo.sh

## Unmount the demo.
stop:
	-target/release/weir umount $(DEMO)/mnt

## Run every test (real FUSE mounts, a real S3 server on loopback).
test: setup
	scripts/test.sh

## Formatting and clippy with warnings denied, as CI runs them.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## fio benchmarks against the local disk, weir, rclone and s3fs.
bench: setup
	$(CARGO) build --release --locked -p weir -p weir-testkit
	BENCH_NO_BUILD=1 bash bench/run.sh

build:
	$(CARGO) build --release --locked -p weir

setup:
	@scripts/setup.sh
