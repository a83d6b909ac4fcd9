# syntax=docker/dockerfile:1

# floodgate container image.
#
#   docker build -t floodgate:0.1.0 .
#   docker run --rm -p 8080:8080 floodgate:0.1.0
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) ->
# builder (dependencies cached in their own layer, then the binary, laid out by a profile of
# itself: scripts/release-build.sh) -> runtime (distroless, no shell, non-root).

# The toolchain the project is built and tested with (README, "Toolchain").
ARG RUST_VERSION=1.95.0
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
# The release build profiles the binary under callgrind (valgrind) to lay out its code;
# curl is already in the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends valgrind=1:3.19.0-1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Reduce the workspace to a recipe that only changes when dependencies change.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin floodgate
COPY . .
# Exposed to the build so the binary can report it in floodgate_build_info.
ARG GIT_SHA=unknown
ENV FLOODGATE_GIT_SHA=${GIT_SHA}
RUN scripts/release-build.sh \
    && strip --strip-debug --output-file /floodgate target/release/floodgate \
    && mkdir /jobs-data

# Runtime: glibc + libgcc only, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="floodgate" \
      org.opencontainers.image.description="HTTP compute service with a bounded worker pool, rate limiting, Prometheus metrics and OTLP traces" \
      org.opencontainers.image.licenses="MIT"
# The binary reads config/default.toml and config/$ENVIRONMENT.toml relative
# to the working directory.
WORKDIR /app
COPY --from=builder /floodgate /app/floodgate
COPY config/ /app/config/
# The default jobs database (sqlite://data/floodgate-jobs.db) is created here on first start;
# the Helm chart mounts a volume instead, the root filesystem staying read-only.
COPY --from=builder --chown=65532:65532 /jobs-data /app/data
ENV ENVIRONMENT=production
USER 65532:65532
EXPOSE 8080
# Exec form: floodgate is PID 1 and receives SIGTERM directly for a graceful drain.
ENTRYPOINT ["/app/floodgate"]
