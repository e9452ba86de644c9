# closewait build, test and benchmark entry points. `make test` installs what
# the tests need (Debian packages, as root) and runs every test.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# Debian packages the tests, `make generate` and `make test-kernels` need;
# wine and mingw run the Windows build (internal/winetest); containerd and
# runc a real pod for the CRI test.
DEB_PKGS := clang llvm libbpf-dev nftables prometheus tmux lsof iproute2 time containerd runc \
	qemu-system-x86 qemu-system-arm cpio xz-utils \
	wine wine64 gcc-mingw-w64-x86-64-win32

# make test-kernels: the packages whose tests run in each guest kernel, and
# -test.run / -test.skip regexps for them. Excluded by default on arm64:
# the ss oracles, as ss is copied from the host, so only into an amd64
# guest; everywhere, the CRI test, which runs containerd (a host program
# with its own daemons and images), and the nftables form of the dead peer
# test: its loopback-down form runs instead, and the ss -K test sends
# SOCK_DESTROY itself where there is no ss.
VMTEST_PKGS ?= ./ebpf ./collector
VMTEST_RUN ?=
VMTEST_SKIP ?= ^(TestCRIContainerd|TestPeerUnresponsive)$$
VMTEST_SKIP_ARM64 ?= ^(TestCRIContainerd|TestPeerUnresponsive|TestOracleSS|TestKeepaliveOracleSS|TestIdleOracleSS)$$
VMTEST_FLAGS ?=
VMTEST = $(GO) run ./internal/vmtest/run $(foreach p,$(VMTEST_PKGS),--pkg $(p)) --run '$(VMTEST_RUN)' $(VMTEST_FLAGS)

.PHONY: build test fuzz soak deps vmtest-deps test-kernels generate check-generate lint bench clean

# Without cgo, as the release binaries (packaging/dist.sh): a static binary
# starts ~3 ms sooner than one the dynamic loader and libc set up first.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o closewait .

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# Runs every FuzzXxx target for FUZZTIME, one after the other; `go test`
# (make test) runs only their seed corpora. A crasher stops the run and is
# left in the package's testdata/fuzz as a regression seed.
FUZZTIME ?= 2m
fuzz:
	@set -e; for f in $$(find . -name '*_test.go' -not -path './testdata/*' | sort); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$t $$(dirname $$f) $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$(dirname $$f); \
		done; \
	done

# apt fetches the arm64 kernel only once dpkg knows the architecture.
vmtest-deps: deps
	@if [ "$$(dpkg --print-architecture)" != arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then \
		echo "dpkg --add-architecture arm64 (for the arm64 kernel package)"; \
		dpkg --add-architecture arm64 && apt-get update -qq; \
	fi

# Runs the tests of VMTEST_PKGS inside Debian 12's kernel (6.1) under qemu,
# amd64 then arm64, the second even when the first fails; see internal/vmtest.
test-kernels: vmtest-deps
	rc=0; \
	$(VMTEST) --arch amd64 --skip '$(VMTEST_SKIP)' || rc=1; \
	$(VMTEST) --arch arm64 --skip '$(VMTEST_SKIP_ARM64)' || rc=1; \
	exit $$rc

generate: deps
	$(GO) generate ./ebpf/

# CI regenerates the BPF objects and bindings and fails on any difference.
check-generate: generate
	git diff --exit-code -- ebpf/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	GOOS=linux $(GO) vet ./...
	GOOS=windows $(GO) build ./...
	GOOS=windows $(GO) vet ./...
	GOOS=darwin $(GO) build ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) vet ./testdata/servers/...  # ./... skips testdata
	$(GO) tool staticcheck ./...
	@# The tool is built for this host; GOOS picks the files it checks. Code
	@# used only on Linux (trace, tracer) is unused elsewhere: U1000 is
	@# checked by the Linux run.
	sc=$$($(GO) tool -n staticcheck) && \
	GOOS=windows $$sc -checks inherit,-U1000 ./... && \
	GOOS=darwin $$sc -checks inherit,-U1000 ./...

# Prints Markdown tables for BENCHMARKS.md. Needs root, ss, lsof; BENCH_FLAGS
# passes e.g. --suites list,small --rounds 9.
bench: build deps
	$(GO) run ./bench run --closewait ./closewait $(BENCH_FLAGS)

# Runs serve (scraped every second) and watch against a loopback churn for
# SOAK and prints the per-minute table and verdict for RELIABILITY.md.
# Needs root (watch's tracer, owners of every process) and ss.
SOAK ?= 30m
soak: build deps
	$(GO) run ./bench soak --closewait ./closewait --duration $(SOAK)

clean:
	rm -f closewait

# Release: static, reproducible binaries (packaging/dist.sh) and Debian
# packages (packaging/deb.sh) in $(DIST), with SHA256SUMS.
DIST ?= dist
DIST_PLATFORMS ?= linux/amd64 linux/arm64 windows/amd64 darwin/amd64 darwin/arm64
DEB_ARCHS ?= amd64 arm64
# --version's commit line; packaging/dist.sh sets the same.
LDFLAGS += -X github.com/closewait/closewait/internal/cli.commit=$(shell git rev-parse HEAD 2>/dev/null)
# packaging/deb_test.go installs the host's .deb and checks it with these.
DEB_PKGS += systemd man-db groff-base zsh fish
.PHONY: dist dist-check deb

dist:
	GO='$(GO)' sh packaging/dist.sh '$(DIST)' '$(VERSION)' $(DIST_PLATFORMS)

# Builds dist again with an empty build cache and fails unless every
# checksum matches.
dist-check: dist
	cache=$$(mktemp -d) && GOCACHE=$$cache GO='$(GO)' sh packaging/dist.sh '$(DIST)/rebuild' '$(VERSION)' $(DIST_PLATFORMS); \
	rc=$$?; rm -rf "$$cache"; [ $$rc = 0 ] && diff $(DIST)/SHA256SUMS $(DIST)/rebuild/SHA256SUMS && echo "dist: reproducible"

deb: dist
	GO='$(GO)' sh packaging/deb.sh '$(DIST)' '$(VERSION)' $(DEB_ARCHS)
