# One kayit node per container: `docker run kayit --help` lists its flags. compose.yaml runs
# five of them, one per container (README, "Deploying across machines").
FROM python:3.11-slim

# The node runs as a user of its own; the dirs it writes are its own, and so are the named
# volumes mounted on them (a new volume takes the ownership of the dir it is mounted on).
RUN useradd --system --uid 10001 --home-dir /var/lib/kayit kayit \
    && mkdir -p /var/lib/kayit /etc/kayit/tls \
    && chown kayit:kayit /var/lib/kayit /etc/kayit/tls

COPY pyproject.toml README.md /tmp/kayit/
COPY src /tmp/kayit/src
RUN pip install --no-cache-dir /tmp/kayit && rm -rf /tmp/kayit

USER kayit
WORKDIR /var/lib/kayit
# 6666: clients (text protocol and RESP); 5555: gRPC, for the other nodes and the tools.
EXPOSE 6666 5555
ENTRYPOINT ["kayit", "node"]
CMD ["--help"]
