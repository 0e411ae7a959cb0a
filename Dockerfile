# Switchyard broker image: `docker build -t switchyard .`
# Build stage: the release binary. Runtime stage: Debian slim, non-root, data in a volume.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard-server --bin switchyard

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/switchyard --create-home switchyard \
    && mkdir -p /var/lib/switchyard/data /etc/switchyard \
    && chown -R switchyard:switchyard /var/lib/switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY switchyard.toml /etc/switchyard/switchyard.toml
USER switchyard
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_BROKER__DATA_DIR=/var/lib/switchyard/data
VOLUME ["/var/lib/switchyard/data"]
EXPOSE 5672
# Exec form: the broker runs as PID 1 and gets `docker stop`'s SIGTERM itself, then shuts down
# gracefully within its 10 s grace period (give `docker stop -t` a little more than that).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard", "--config", "/etc/switchyard/switchyard.toml"]
