# Multi-stage build: compile in the Rust image, run as a non-root user on Debian slim.
# (Not built in CI: the development machines have no Docker engine; see README.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin costmeter

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/costmeter --create-home costmeter
COPY --from=build /src/target/release/costmeter /usr/local/bin/costmeter
USER costmeter
WORKDIR /var/lib/costmeter
EXPOSE 8000
ENTRYPOINT ["costmeter"]
CMD ["run", "--config", "/etc/costmeter/costmeter.toml"]
