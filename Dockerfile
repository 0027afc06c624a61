# tokenledger: a release build, then a slim Debian runtime running as a non-root user.
#   docker build -t tokenledger:local .
# CI does not build this image (no Docker engine there); it checks docker-compose.yml with
# `docker-compose config -q` and the variables it names with tests/api/deploy.rs.

FROM rust:1.95-slim-bookworm AS build
# Cargo features to build with: `--build-arg FEATURES=kurrentdb` for the KurrentDB log.
ARG FEATURES=""
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions in Cargo.lock, or fail.
RUN cargo build --release --locked --bin tokenledger ${FEATURES:+--features "$FEATURES"} \
    && cp target/release/tokenledger /usr/local/bin/tokenledger

FROM debian:bookworm-slim
# ca-certificates: Clerk's JWKS is fetched over TLS. curl: the health check only (about 1 MB
# with --no-install-recommends).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tokenledger --shell /usr/sbin/nologin tokenledger \
    && mkdir -p /var/lib/tokenledger/keys \
    && chown -R tokenledger:tokenledger /var/lib/tokenledger \
    && chmod 0700 /var/lib/tokenledger/keys
COPY --from=build /usr/local/bin/tokenledger /usr/local/bin/tokenledger
USER tokenledger
# The SQLite default and, for PostgreSQL, the default signing-key file land here.
WORKDIR /var/lib/tokenledger
# Inside a container the service must listen beyond loopback; publish the port to choose who
# reaches it.
ENV BIND_ADDR=0.0.0.0:3000 \
    APP_ENV=production
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["tokenledger"]
CMD ["serve"]
