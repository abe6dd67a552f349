# callgate: build in a Rust image, run on slim Debian. Run it with host networking (see
# docker-compose.yml): RTP uses a port range that NAT'ing through Docker's proxy would break.
FROM rust:1-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bin callgate

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/callgate callgate \
 && mkdir -p /var/lib/callgate/recordings /var/lib/callgate/data \
 && chown -R callgate /var/lib/callgate
COPY --from=build /src/target/release/callgate /usr/local/bin/callgate
COPY config /var/lib/callgate/config
WORKDIR /var/lib/callgate
USER callgate
# SIP 5060 udp/tcp, HTTP 8080, WebRTC 10000/udp, RTP 20000-20999/udp (host network).
ENTRYPOINT ["callgate"]
CMD ["serve", "--config", "config/callgate.toml"]
