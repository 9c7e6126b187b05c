# burncache serve in a container: built with the toolchain, run from a small image
# as a user of its own.
#
#   docker build -t burncache .
#   docker run -p 8080:8080 -v /etc/burncache:/etc/burncache:ro burncache
#
# /etc/burncache holds admin-token and cluster.key, owned by root (or uid 10001),
# group 10001, mode 0440.
FROM rust:1.95-trixie AS build
# The JavaScript runtime is built from C (QuickJS) for wasm32-wasip2 at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang-19 llvm-19 wasi-libc \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p burncache --bin burncache \
    && strip target/release/burncache

FROM debian:trixie-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home \
       --home-dir /var/lib/burncache burncache
COPY --from=build /src/target/release/burncache /usr/local/bin/burncache
USER 10001:10001
# Artifacts (compiled code, kept across restarts) and the default store live in
# the user's home; in a cluster the store is S3 (BURNCACHE_STORE).
ENV XDG_CACHE_HOME=/var/lib/burncache/cache \
    XDG_DATA_HOME=/var/lib/burncache/data
EXPOSE 8080
ENTRYPOINT ["burncache"]
# Off loopback, the admin routes need a token; the cluster key shares compiled code.
CMD ["serve", "--addr", "0.0.0.0:8080", \
     "--admin-token-file", "/etc/burncache/admin-token", \
     "--cluster-key-file", "/etc/burncache/cluster.key"]
