# kafkaworker: `make help` lists the targets.
GO ?= go
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## Run the quickstart on the embedded broker (or KAFKA_BROKERS when set); ARGS="-linger 10m" keeps the status page up after
	$(GO) run ./examples/quickstart $(ARGS)

.PHONY: test
test: vet ## Vet, then all unit and integration tests with -race (embedded broker, or KAFKA_BROKERS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

.PHONY: vet
vet: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# ARGS go to the demo and the bench: make demo ARGS="-linger 10m", make bench ARGS=-quick, make bench ARGS="-only=noop -reps=7".
ARGS ?=

.PHONY: bench
bench: ## Side by side with raw sarama on the embedded broker, Markdown tables; options via ARGS (ARGS=-quick: smoke test)
	$(GO) run ./bench $(ARGS)

.PHONY: short
short: ## Unit tests only, fast: the integration suite skips under -short, saying why
	$(GO) test -race -count=1 -short $(PKGS)

# SCREENSHOT is where make screenshot writes the status page's PNG.
SCREENSHOT ?= status.png

.PHONY: screenshot
screenshot: ## The status page in headless Chromium during a run, saved as a PNG (SCREENSHOT=status.png)
	$(GO) test -count=1 -run 'TestStatusPageInBrowser$$' -v ./integration -screenshot=$(abspath $(SCREENSHOT))
