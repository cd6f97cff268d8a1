# dockyard's server and agent in one image (the command picks the role).
#
#   pip wheel --no-deps -w dist .          # the wheel of this checkout
#   docker build -t dockyard:0.1.0 .       # FROM python:3.11-slim, dependencies from PyPI
#   docker run -d -p 127.0.0.1:8700:8700 -p 8701:8701 -v dockyard:/data dockyard:0.1.0
#   docker run -d -v /var/run/docker.sock:/var/run/docker.sock -v dockyard-agent:/data \
#       dockyard:0.1.0 agent --server tcp://SERVER:8701 --join-token dyj....
#
# Without a registry (CI here), BASE is a local image and pip works offline:
#   --build-arg BASE=dockyard/python-base:local --build-arg PIP_NO_INDEX=1
#   --build-arg PIP_NO_DEPS=1        (tests/e2e/test_container_image.py, docs/install.md)
ARG BASE=python:3.11-slim
FROM ${BASE}

# pip reads these from the environment; empty unless given as build arguments.
ARG PIP_NO_INDEX
ARG PIP_NO_DEPS
COPY dist/ /tmp/wheels/
# Exec form: the local base has no shell.
RUN ["python3", "-m", "pip", "install", "--no-cache-dir", "--root-user-action=ignore", \
     "--disable-pip-version-check", "--find-links", "/tmp/wheels", "dockyard[server,postgres]"]

ENV DOCKYARD_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8700 8701
# The server listens on every interface of the container: publish its ports on the
# host as you mean them to be reached (-p 127.0.0.1:8700:8700 for this machine only).
ENTRYPOINT ["dockyard"]
CMD ["server", "--host", "0.0.0.0", "--gateway", "tcp://0.0.0.0:8701"]
