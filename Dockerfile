# Multi-stage build of the TalkwAI services. One image, one binary per service:
#   docker build --build-arg BIN=talkwai-command-service -t talkwai/command-service .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ARG BIN=talkwai-command-service
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin "${BIN}" && cp "target/release/${BIN}" /service

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 talkwai
COPY --from=build /service /usr/local/bin/service
USER talkwai
ENTRYPOINT ["/usr/local/bin/service"]
