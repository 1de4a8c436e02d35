# group-server in a container: a build stage with the Rust toolchain, and a slim runtime stage that runs
# the binary as an unprivileged user. Build: docker build -t group-server .
# Run one node with the defaults on all interfaces (the mesh needs a secret beyond loopback):
#   docker run --rm -p 7100:7100 -p 7100:7100/udp -p 7200:7200 -e GROUP_MESH_SECRET=... group-server
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p group-net --bin group-server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin group
COPY --from=build /src/target/release/group-server /usr/local/bin/group-server
COPY deploy/container.json /etc/group/config.json
USER 10001
# Client transports (TCP and UDP share 7100), WebSocket, mesh (TCP and UDP), metrics and health.
EXPOSE 7100/tcp 7100/udp 7200/tcp 8100/tcp 8100/udp 9100/tcp
ENTRYPOINT ["/usr/local/bin/group-server", "--config", "/etc/group/config.json"]
