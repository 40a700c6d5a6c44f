# syntax=docker/dockerfile:1
# The ETUDE image: `etude serve`, `etude loadgen` and `etude export` (the runtime side; no Pulumi inside).
# One Dockerfile, two flavours, chosen by the torch wheel index:
#   CPU  (default):   docker build -t etude:cpu .
#   CUDA (GPU types): docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t etude:cuda .
# The CUDA wheels bring the CUDA libraries; GKE mounts the driver at /usr/local/nvidia, and GPU pods get it on
# LD_LIBRARY_PATH and PATH from their env (components/manifests.py, whose PATH repeats this image's).
# `pulumi up` builds and pushes both (infra/image.py); runs as the non-root user 10001 with a read-only root.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/etude/bin:$PATH
RUN python -m venv /opt/etude
# torch in its own layer: large, and it changes only with the pin.
RUN pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple "torch==2.13.0"
# The runtime dependencies of pyproject.toml, minus the Pulumi side and the report's plotting (not used here).
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if not d.startswith(('pulumi', 'matplotlib', 'torch'))))" > /tmp/runtime.txt \
 && pip install -r /tmp/runtime.txt
COPY . /src
RUN pip install --no-deps /src && etude --version

FROM ${PYTHON_IMAGE}
# A C++ compiler: `etude export --runtime aot` compiles the model with AOTInductor in this image.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 etude \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin etude
COPY --from=build /opt/etude /opt/etude
ENV PATH=/opt/etude/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["etude"]
CMD ["--help"]
