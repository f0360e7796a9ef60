# The service image: the Azure Functions host (Python 3.11) running function_app.py, which
# serves the HTTP API and runs the queue-triggered worker and the purge timer, with CPU-only
# torch and the official GFPGAN / facexlib weights baked in and verified by SHA-256.
#
# Built in Azure by ACR Tasks (no local Docker needed), from the repository root:
#   az acr build -r <registry> -t face-restore:<tag> .
# The build downloads the official weights (about 890 MB). To bake a copy you already have,
# put the four files in weights-official/ at the repository root (the one place .dockerignore
# lets .pth files into the build context) and pass it:
#   az acr build -r <registry> -t face-restore:<tag> --build-arg WEIGHTS_FROM=weights-official .
# Either way `python -m processing weights fetch` checks every file against its published
# SHA-256 and `weights verify` runs again on the final image: a build with missing or corrupt
# weights fails.

# ---------------------------------------------------------------------------------------------
# base: the Functions image plus our pinned runtime requirements
# ---------------------------------------------------------------------------------------------
FROM mcr.microsoft.com/azure-functions/python:4-python3.11 AS base

# Must equal the torch== / torchvision== pins in requirements.txt (checked below and by
# tests/infra/test_infra_dockerfile.py).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# opencv-python needs libGL and GLib at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

COPY requirements.txt /tmp/requirements.txt

# CPU-only torch first, from the PyTorch CPU index, at exactly the versions requirements.txt
# pins ("2.14.1+cpu" satisfies "torch==2.14.1"), so `pip install -r requirements.txt` finds
# torch already satisfied and never pulls the multi-GB CUDA build. No dev/test requirements.
RUN grep -qx "torch==${TORCH_VERSION}" /tmp/requirements.txt \
    && grep -qx "torchvision==${TORCHVISION_VERSION}" /tmp/requirements.txt \
    && python -m pip install --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
    && python -m pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && python -m pip install -r /tmp/requirements.txt \
    && python -c "import sys, torch; sys.exit('CUDA build of torch installed' if torch.version.cuda else 0)" \
    && if python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then echo 'CUDA libraries installed' >&2; exit 1; fi

# ---------------------------------------------------------------------------------------------
# weights: fetch (or copy) the official weights and verify them; only /opt/weights leaves here
# ---------------------------------------------------------------------------------------------
FROM base AS weights

# weights-official (a directory of the build context holding the official files); empty: download.
ARG WEIGHTS_FROM=""
# --dir is passed explicitly: the weights commands need no storage settings at build time.
ENV WEIGHTS_DIR=/opt/weights

WORKDIR /build
COPY processing/ /build/processing/
# When WEIGHTS_FROM is empty this copies a harmless placeholder (requirements.txt) instead.
COPY ${WEIGHTS_FROM:-requirements.txt} /build/weights-from/
RUN if [ -n "${WEIGHTS_FROM}" ]; then \
        python -m processing weights fetch --dir "${WEIGHTS_DIR}" --from /build/weights-from; \
    else \
        python -m processing weights fetch --dir "${WEIGHTS_DIR}"; \
    fi \
    && python -m processing weights verify --dir "${WEIGHTS_DIR}" \
    && python -m processing.onnx_runtime export --weights-dir "${WEIGHTS_DIR}"
# ^ the engine runs the networks as ONNX graphs (OpenVINO by default); exporting them here,
# keyed by each checkpoint's SHA-256, means no instance pays ~20 s of export at its first job
# and the read-only weights directory already holds what the engine looks for.

# ---------------------------------------------------------------------------------------------
# final: the Functions host with our app in /home/site/wwwroot, running as a non-root user
# ---------------------------------------------------------------------------------------------
FROM base AS final

ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    FUNCTIONS_WORKER_RUNTIME=python \
    ASPNETCORE_URLS=http://+:8080 \
    HOME=/home \
    WEIGHTS_DIR=/opt/weights \
    STANDIN_WEIGHTS=false

COPY --from=weights /opt/weights /opt/weights

# The app: only what the Functions host runs (tests, infra and dev files stay out).
COPY host.json function_app.py requirements.txt /home/site/wwwroot/
COPY processing/ /home/site/wwwroot/processing/
COPY static_site/ /home/site/wwwroot/static_site/

WORKDIR /home/site/wwwroot

# Verify the weights again in the image that ships, refuse stand-in weights, check that the
# model code imports (OpenCV's system libraries, the torchvision alias for basicsr), and
# precompile so a cold start does not write bytecode.
RUN python -m processing weights verify --dir "${WEIGHTS_DIR}" \
    && test ! -e /opt/weights/STANDIN-WEIGHTS.json \
    && python -c "import processing.engine, gfpgan, facexlib" \
    && python -m compileall -q /home/site/wwwroot/processing /home/site/wwwroot/function_app.py

# Non-root: the host only needs to write under $HOME (logs, extension bundle cache) and /tmp;
# the code and the weights stay read-only to it. Port 8080 because an unprivileged user
# cannot bind 80 everywhere (ingress targetPort / WEBSITES_PORT point here).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /home/data /home/LogFiles \
    && chown app:app /home /home/data /home/LogFiles

USER app
EXPOSE 8080

# For `docker run`; Container Apps and App Service use their own probes on /api/health.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/health', timeout=8)"]
