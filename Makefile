# closewait build, test and benchmark entry points. `make test` installs what
# the tests need (Debian packages, as root) and runs every test.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# Debian packages the tests and `make generate` need.
DEB_PKGS := clang llvm libbpf-dev nftables prometheus tmux lsof iproute2 time

.PHONY: build test deps generate check-generate lint bench clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o closewait .

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

generate: deps
	$(GO) generate ./ebpf/

# CI regenerates the BPF objects and bindings and fails on any difference.
check-generate: generate
	git diff --exit-code -- ebpf/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	GOOS=linux $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) vet ./testdata/servers/...  # ./... skips testdata
	$(GO) tool staticcheck ./...

# Prints Markdown tables for BENCHMARKS.md. Needs root, ss, lsof; BENCH_FLAGS
# passes e.g. --suites list,small --rounds 9.
bench: build deps
	$(GO) run ./bench run --closewait ./closewait $(BENCH_FLAGS)

clean:
	rm -f closewait
