#!/bin/sh
# The image's entry point: `daskmeans ARGS` (no arguments: `daskmeans doctor`).
# Commands that a Dask deployment passes as the container's arguments run as given:
# the Dask Kubernetes operator starts its pods with `args: [dask-worker, ...]` or
# `[dask, worker, ...]`, and `docker run IMAGE python ...` or `sh` work as usual.
case "${1-}" in
    "") exec daskmeans doctor ;;
    dask | dask-* | daskmeans | python | python3 | python3.* | sh | bash | /*) exec "$@" ;;
    *) exec daskmeans "$@" ;;
esac
