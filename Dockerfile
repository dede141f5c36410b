# daskmeans as a container image: the command line, a Dask scheduler and Dask workers.
#
#   docker build -t daskmeans:0.1.0 .            # from the repository root (podman build works the same)
#   docker volume create daskmeans
#   docker run --rm -v daskmeans:/var/lib/daskmeans daskmeans:0.1.0 doctor
#   docker run --rm -v daskmeans:/var/lib/daskmeans -v "$PWD/../shared/data:/data:ro" \
#       daskmeans:0.1.0 run --data /data/cifar10-images.tar.gz --subset 2000
#   docker run --rm --network host daskmeans:0.1.0 dask worker tcp://127.0.0.1:8786
#
# The tag is what `daskmeans job render --target kubernetes` names by default
# (daskmeans:<version>); push it where your cluster pulls from, under that name
# or another one given as render.kubernetes.image in the job spec.
#
# How it runs: as user 1000 (group 1000, no writable home), the package installed
# read-only by root, and everything daskmeans and its libraries write (the data
# cache, compiled kernels, matplotlib's files, the runs) on the volume mounted at
# /var/lib/daskmeans. The root filesystem can be mounted read-only
# (readOnlyRootFilesystem) if /tmp is a writable volume (emptyDir).

ARG PYTHON_VERSION=3.11

# -- the wheel, built from the source tree -------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daskmeans/ daskmeans/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- the image ------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm

# What a cluster worker and a job pod need beyond the dependencies: the dashboard
# (bokeh), object stores (s3fs) and the Dask Kubernetes operator's client (kubernetes).
ARG EXTRAS=dashboard,s3,kubernetes

COPY --from=wheel /wheels /tmp/wheels
RUN set -eux; \
    pip install --no-cache-dir --disable-pip-version-check "$(ls /tmp/wheels/daskmeans-*.whl)[${EXTRAS}]"; \
    rm -rf /tmp/wheels; \
    groupadd --system --gid 1000 daskmeans; \
    useradd --system --uid 1000 --gid 1000 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin daskmeans; \
    install -d -o 1000 -g 1000 -m 0775 /var/lib/daskmeans
COPY docker/entrypoint.sh /usr/local/bin/daskmeans-entrypoint

ENV DASKMEANS_CACHE=/var/lib/daskmeans/cache \
    NUMBA_CACHE_DIR=/var/lib/daskmeans/cache/numba \
    MPLCONFIGDIR=/var/lib/daskmeans/cache/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

VOLUME /var/lib/daskmeans
WORKDIR /var/lib/daskmeans
USER 1000:1000
# Dask's scheduler and worker (8786, 8787 dashboard); bind them with --host as README, Security says
EXPOSE 8786 8787
ENTRYPOINT ["daskmeans-entrypoint"]
CMD ["doctor"]
