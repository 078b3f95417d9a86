# lam - Lambda-architecture analytics pipeline. `make help` lists the targets.

CC       ?= cc
BUILD    ?= build
SANITIZE ?=
OPT      ?= -O2

PG_INC   := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers -Wno-format-truncation \
            -fno-strict-aliasing -D_GNU_SOURCE -MMD -MP -Ishared -Itests -I$(PG_INC)
LDLIBS   := -lrdkafka -lhiredis -lpq -lmicrohttpd -lzstd -llz4 -lpthread -lm

ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
BUILD    := build/san
endif

SERVICES := ingest speed_layer batch_layer serving
TOOLS    := loadgen

SHARED_SRC := $(wildcard shared/*.c)
SHARED_OBJ := $(SHARED_SRC:%.c=$(BUILD)/%.o)
LIB        := $(BUILD)/liblam.a

BINS       := $(SERVICES:%=$(BUILD)/bin/%) $(if $(wildcard tools/loadgen/*.c),$(BUILD)/bin/loadgen)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_SRC  := $(wildcard tests/integration/itest_*.c)
INTEG_BINS := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/%)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

.PHONY: all help deps build test unit integration fuzz fuzz-corpus run up down bench soak fmt clean config-table

all: build

help:
	@echo "make run        install what is missing, build, start the stack + demo traffic (Ctrl-C stops)"
	@echo "make test       install what is missing, build, run every test on throwaway servers"
	@echo "make up / down  the stack in the background / stop it"
	@echo "make bench      the benchmark suite"
	@echo "make fuzz       run the libFuzzer targets for FUZZ_SECONDS each (default 60)"
	@echo "make SANITIZE=address,undefined test   the same under ASan/UBSan"

deps:
	@scripts/deps.sh

# The dashboard's chart library, copied from node_modules (npm ci by make deps).
DASH_VENDOR := $(if $(wildcard dashboards/node_modules),dashboards/app/vendor/echarts.min.js)

build: $(BINS) $(UNIT_BINS) $(INTEG_BINS) $(DASH_VENDOR)

dashboards/app/vendor/echarts.min.js: dashboards/package-lock.json dashboards/build.mjs
	cd dashboards && npm run --silent build

$(LIB): $(SHARED_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# Each service: every .c in its folder, linked with the shared library.
define service_rule
$(BUILD)/bin/$(1): $$(patsubst %.c,$(BUILD)/%.o,$$(wildcard $(1)/*.c)) $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call service_rule,$(s))))

# serving embeds its OpenAPI document with .incbin, which -MMD does not see.
$(BUILD)/serving/serving_static.o: serving/openapi.json

$(BUILD)/bin/loadgen: $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/loadgen/*.c)) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/testlib.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tests/itest_%: $(BUILD)/tests/integration/itest_%.o $(BUILD)/tests/testlib.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# Micro-benchmark of the event parser and view engine, against jansson (bench only).
$(BUILD)/bench/bench_parse: bench/bench_parse.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DLAM_BENCH_JANSSON -o $@ $< $(LIB) $(LDLIBS) -ljansson

# bench only: the load generator's clickstream, canonicalised, produced straight into Kafka.
$(BUILD)/bench/bench_gen: $(BUILD)/bench/bench_gen.o $(BUILD)/tools/loadgen/loadgen_gen.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/bench/bench_gen.o: CFLAGS += -Itools/loadgen

$(BUILD)/tests/testlib.o: tests/testlib.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# libFuzzer targets always build with clang + ASan/UBSan, independent of SANITIZE.
FUZZ_CFLAGS := -g -O1 -std=gnu11 -D_GNU_SOURCE -Ishared -I$(PG_INC) \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
build/fuzz/%: tests/fuzz/%.c $(SHARED_SRC) $(wildcard shared/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(filter-out shared/lam_kafka.c shared/lam_redis.c shared/lam_pg.c shared/lam_http.c shared/lam_store.c,$(SHARED_SRC)) -lzstd -lm -lpthread

# Run every fuzz target over its committed seed corpus (part of make test).
fuzz-corpus: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); \
	  echo "fuzz corpus: $$n"; $$f -runs=0 tests/fuzz/corpus/$$n >/dev/null 2>build/fuzz/$$n.log \
	  || { cat build/fuzz/$$n.log; exit 1; }; done

FUZZ_SECONDS ?= 60
fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus-$$n tests/fuzz/corpus/$$n || exit 1; done

unit: $(UNIT_BINS)
	@scripts/test.sh "$(BUILD)" unit

test: deps
	@$(MAKE) --no-print-directory build
	@scripts/test.sh "$(BUILD)"

integration: build
	@scripts/test.sh "$(BUILD)" integration

run: deps build
	@scripts/lam.sh run

up: deps build
	@scripts/lam.sh up

down:
	@scripts/lam.sh down

bench: deps build $(BUILD)/bench/bench_parse $(BUILD)/bench/bench_gen
	@scripts/bench.sh

soak: deps build
	@scripts/soak.sh

config-table: $(BINS)
	@for s in $(SERVICES); do $(BUILD)/bin/$$s --config-table; done

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
