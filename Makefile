# Outrider — a sidecar proxy in Swift. `make run` and `make test` work on a fresh Debian 12
# machine with Swift installed: missing Debian packages and Python test tools are installed here.

SWIFT        ?= swift
RELEASE_BIN  := .build/release/outrider
SWIFT_RELEASE = $(SWIFT) build -c release --static-swift-stdlib --product outrider
FUZZ_SECONDS ?= 600
FUZZ_BIN     := .build-fuzz/release/HTTP1Fuzz
WAF_FUZZ_BIN := .build-fuzz/release/WAFFuzz

# Debian packages: build-time C libraries, test peers and benchmark peers.
APT_PACKAGES := curl wrk nginx-light haproxy nghttp2-client nghttp2-server iptables iproute2 pkg-config strace \
                libssl-dev libnghttp2-dev libhiredis-dev redis-server libpcre2-dev \
                modsecurity-crs libmodsecurity3 libnginx-mod-http-modsecurity
PIP_PACKAGES := pytest rotel opentelemetry-proto h2

.PHONY: all deps build run test unit-test integration-test crs-test redirect-test fuzz fuzz-waf fuzz-smoke bench waf-bench check crs clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@for p in $(PIP_PACKAGES); do pip show -q $$p >/dev/null 2>&1 || pip install -q $$p; done

build: deps
	$(SWIFT_RELEASE)

# Starts the demo upstream on 127.0.0.1:8080 and Outrider with outrider.yaml in front of it.
run: build
	@python3 deploy/demo/upstream.py --port 8080 --name demo > /tmp/outrider-demo-upstream.log 2>&1 & \
	up=$$!; trap "kill $$up 2>/dev/null" EXIT INT TERM; \
	echo ""; \
	echo "  demo upstream on 127.0.0.1:8080; Outrider on 127.0.0.1:15006, admin on 127.0.0.1:15000"; \
	echo "  try:  curl -i http://127.0.0.1:15006/echo"; \
	echo "        curl http://127.0.0.1:15000/metrics"; \
	echo ""; \
	$(RELEASE_BIN) run --config outrider.yaml

# Every test: Swift unit tests, the integration suite against the release binary, the
# traffic-redirect test in network namespaces, and a short fuzz run of the HTTP/1 parsers.
test: build unit-test integration-test crs-test redirect-test fuzz-smoke
	@echo "make test: all suites passed"

unit-test: deps
	$(SWIFT) test

integration-test: build
	OUTRIDER_BIN=$(CURDIR)/$(RELEASE_BIN) python3 -m pytest -q Tests/integration

redirect-test: deps
	bash deploy/init/test_redirect.sh

$(FUZZ_BIN): $(shell find Sources/HTTP1 Sources/HTTP1Fuzz Sources/FuzzReplay Sources/OutriderCore -name '*.swift')
	$(SWIFT) build -c release --sanitize=fuzzer -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING \
	  --product HTTP1Fuzz --scratch-path .build-fuzz
	@mkdir -p $(dir $(FUZZ_BIN)) && touch $(FUZZ_BIN)

# libFuzzer on the HTTP/1 request and response parsers (10 minutes by default).
fuzz: $(FUZZ_BIN)
	@mkdir -p .build-fuzz/corpus && cp -n fuzz/http1-seeds/* .build-fuzz/corpus/ 2>/dev/null || true
	SWIFT_BACKTRACE=enable=no $(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=10 .build-fuzz/corpus

$(WAF_FUZZ_BIN): $(shell find Sources/WAF Sources/WAFFuzz Sources/FuzzReplay Sources/CPCRE2 Sources/CInjection -name '*.swift' -o -name '*.[ch]')
	$(SWIFT) build -c release --sanitize=fuzzer -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING \
	  --product WAFFuzz --scratch-path .build-fuzz
	@mkdir -p $(dir $(WAF_FUZZ_BIN)) && touch $(WAF_FUZZ_BIN)

# libFuzzer on the WAF's request-body processors (urlencoded, multipart, JSON, XML), cookie and
# query parsing, transformations and the SecLang loader (10 minutes by default).
fuzz-waf: $(WAF_FUZZ_BIN)
	@mkdir -p .build-fuzz/waf-corpus && cp -n fuzz/waf-seeds/* .build-fuzz/waf-corpus/ 2>/dev/null || true
	SWIFT_BACKTRACE=enable=no $(WAF_FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 .build-fuzz/waf-corpus

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=60
	$(MAKE) fuzz-waf FUZZ_SECONDS=60

bench: build
	OUTRIDER_BIN=$(CURDIR)/$(RELEASE_BIN) python3 bench/bench.py

# The WAF engine alone, in process: µs per request for benign and attack requests (no sockets).
waf-bench: build
	.build/release/WAFBench filters/waf/base.conf 3

# The OWASP CRS 3.3.4 regression tests (shared/crs-tests) through the WAF filter at PL4 in
# DetectionOnly; prints `N passed, N failed`. `make crs` fails on any failure; `make test` on a
# pass rate below the reference engine's (ModSecurity v3: 97.4%).
crs: build
	OUTRIDER_BIN=$(CURDIR)/$(RELEASE_BIN) python3 Tests/integration/crs_runner.py -v

crs-test: build
	OUTRIDER_BIN=$(CURDIR)/$(RELEASE_BIN) python3 Tests/integration/crs_runner.py --min-pass-rate 97.4

# Validates the shipped configs and every rule file they name.
check: build
	$(RELEASE_BIN) check --config outrider.yaml
	$(RELEASE_BIN) check --config deploy/outrider.example.yaml

clean:
	rm -rf .build .build-fuzz
