# The sagashop image: one binary, every role (`SAGASHOP_ROLES` picks them per container).
#
#   docker build -t sagashop .        (or ./run.sh run, which builds it through compose)
#
# Two stages: the builder compiles a release binary with the toolchain rust-toolchain.toml
# pins; the runtime is distroless (glibc and libgcc, no shell, no package manager), running
# as the unprivileged `nonroot` user. SQLite is bundled and TLS is pure Rust: the binary
# needs no other library.

FROM rust:1.95.0-slim-bookworm AS builder
# rust-toolchain.toml names 1.95.0 with rustfmt and clippy; the image has 1.95.0 itself and a
# release build needs neither component, so rustup is told to use it as it is.
ENV RUSTUP_TOOLCHAIN=1.95.0 CARGO_TERM_COLOR=never
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every change of the sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin sagashop \
 && rm -rf src

# Then the rest of the context (.dockerignore keeps it to what the build reads: sources,
# migrations, embedded assets).
COPY . .
# COPY keeps the sources' own modification times, which may be older than the placeholder
# build above: touch them so cargo rebuilds the crate itself.
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin sagashop \
 && mkdir -p /out/data \
 && cp target/release/sagashop /out/sagashop

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sagashop /usr/local/bin/sagashop
# Embedded mode keeps its SQLite files and generated secret here; a cluster node, on MySQL,
# only needs it to exist.
COPY --from=builder --chown=nonroot:nonroot /out/data /var/lib/sagashop
ENV SAGASHOP_LISTEN=0.0.0.0:8000 \
    SAGASHOP_DATA_DIR=/var/lib/sagashop
# 8000: the HTTP API and /dashboard; 8080: Prometheus metrics (`--metrics-listen`).
EXPOSE 8000 8080
USER nonroot
# Ready when `/readyz` on this container's API answers 200 (no curl in the image: the
# binary asks itself).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/sagashop", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sagashop"]
CMD ["serve"]
