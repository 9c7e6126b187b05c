# burncache serve in a container: built with the toolchain, run from a small image
# as a user of its own.
#
#   docker build -t burncache .
#   docker run -p 8080:8080 -v $PWD/secrets:/etc/burncache:ro burncache
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p burncache --bin burncache \
    && strip target/release/burncache

FROM debian:bookworm-slim
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
