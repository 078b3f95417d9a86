# lam services: one Debian-based image holding ingest, speed_layer, batch_layer, serving and loadgen.
FROM debian:bookworm-slim AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc make libc6-dev librdkafka-dev libhiredis-dev libpq-dev libmicrohttpd-dev libzstd-dev liblz4-dev \
      postgresql-common \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY shared shared
COPY ingest ingest
COPY speed_layer speed_layer
COPY batch_layer batch_layer
COPY serving serving
COPY tools tools
RUN make -j"$(nproc)" BUILD=/out $(for s in ingest speed_layer batch_layer serving; do echo /out/bin/$s; done) \
    && { [ ! -d tools/loadgen ] || make BUILD=/out /out/bin/loadgen; }

# The dashboard's chart library from npm (the same lockfile as `make deps`).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY dashboards/ ./
RUN npm ci --no-audit --no-fund && npm run build && rm -rf node_modules

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 libhiredis0.14 libpq5 libmicrohttpd12 libzstd1 liblz4-1 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/lam --create-home lam
COPY --from=build /out/bin/ /usr/local/bin/
COPY shared/views.json /etc/lam/views.json
COPY --from=web /web /usr/share/lam/dashboards
ENV LAM_VIEWS=/etc/lam/views.json LAM_DASHBOARDS_DIR=/usr/share/lam/dashboards LAM_DATA_DIR=/var/lib/lam/data
USER lam
WORKDIR /var/lib/lam
