# The `weft` binary and the example worker components on a slim runtime
# image, run as a non-root user (uid 10001):
#
#   docker build -t weft:latest .
#   docker run --rm weft:latest run /opt/weft/ps_linear_regression.wasm -- 0.05 2000 100 256
#
# deploy/ runs this image on Kubernetes (docs/DEPLOY.md).

FROM rust:1.95-slim-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release -p weft-host --bin weft \
 && cargo build --release --target wasm32-wasip2 -p ps-linear-regression -p parameter-server

FROM debian:bookworm-slim
RUN groupadd --gid 10001 weft \
 && useradd --uid 10001 --gid weft --create-home --home-dir /home/weft --shell /usr/sbin/nologin weft
COPY --from=build /src/target/release/weft /usr/local/bin/weft
COPY --from=build /src/target/wasm32-wasip2/release/ps_linear_regression.wasm /opt/weft/ps_linear_regression.wasm
COPY --from=build /src/target/wasm32-wasip2/release/parameter_server.wasm /opt/weft/parameter_server.wasm
USER 10001:10001
WORKDIR /home/weft
# Compiled modules, whatever HOME the runtime sets (mount a volume here when
# the root filesystem is read-only).
ENV WEFT_CACHE_DIR=/home/weft/.cache/weft/modules
# 2222: a cluster task (--bind); 7000: a shared host (--listen); 9464: /metrics (--metrics).
EXPOSE 2222 7000 9464
ENTRYPOINT ["weft"]
