# The service image: the Azure Functions host (Python 3.11) running function_app.py, which
# serves the HTTP API and runs the queue-triggered worker and the purge timer. The networks
# run as ONNX exports on OpenVINO / ONNX Runtime: the image that ships has no torch, no
# upstream model packages and no checkpoints, only the exported model store, made and
# verified at build time from the official weights (SHA-256 checked against their
# published values).
#
# Built in Azure by ACR Tasks (no local Docker needed), from the repository root:
#   az acr build -r <registry> -t face-restore:<tag> .        (azd up does the same)
# The build downloads the official checkpoints (about 890 MB). To bake a copy you already
# have, put the files in weights-official/ at the repository root (the one place
# .dockerignore lets .pth files into the build context) and pass it:
#   az acr build -r <registry> -t face-restore:<tag> --build-arg WEIGHTS_FROM=weights-official .
#
# Stages, in the order their layers change least:
#   base         the Functions image and the run-time requirements (requirements.txt)
#   checkpoints  base + build tools; fetch and verify the official checkpoints. Its inputs are
#                the requirement files and the weights table only, so a code change does
#                not download 890 MB again.
#   models       export the checkpoints to the model store (/opt/models) and verify it
#   final        base + the app + /opt/models, read-only, non-root

# The Functions Python 3.11 image, by digest: the 4-python3.11 tag is republished in place on
# every runtime or security rebase, so a digest makes two builds of one commit the same.
# Refresh it deliberately (`docker buildx imagetools inspect <tag>` or `az acr import`) and
# record the date here. Pinned digest as published for 4-python3.11 (not resolvable from the
# machine this was written on, which reaches no container registry).
# ---------------------------------------------------------------------------------------------
# base: the Functions image plus the pinned run-time requirements, nothing else
# ---------------------------------------------------------------------------------------------
FROM mcr.microsoft.com/azure-functions/python:4-python3.11@sha256:ebc5ba1fc20f7809b2676872a016ba6ede2c43d2feab4c22164b6f2a07d75733 AS base

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY requirements.txt /tmp/requirements.txt
RUN python -m pip install --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
    && python -m pip install -r /tmp/requirements.txt

# ---------------------------------------------------------------------------------------------
# checkpoints: the build tools, and the official checkpoints fetched (or copied) and verified
# ---------------------------------------------------------------------------------------------
FROM base AS checkpoints

# Must equal the torch== / torchvision== pins in requirements-build.txt (checked below and by
# tests/infra/test_infra_dockerfile.py).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

COPY requirements-build.txt requirements-upstream.txt /tmp/
# CPU-only torch first, from the PyTorch CPU index, at exactly the pinned versions
# ("2.14.1+cpu" satisfies "torch==2.14.1"), so the build requirements find torch satisfied and
# never pull the multi-GB CUDA build; the upstream packages without their declared extras.
RUN grep -qx "torch==${TORCH_VERSION}" /tmp/requirements-build.txt \
    && grep -qx "torchvision==${TORCHVISION_VERSION}" /tmp/requirements-build.txt \
    && python -m pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && python -m pip install -r /tmp/requirements-build.txt \
    && python -m pip install --no-deps --no-build-isolation -r /tmp/requirements-upstream.txt \
    && python -c "import sys, torch; sys.exit('CUDA build of torch installed' if torch.version.cuda else 0)" \
    && if python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then echo 'CUDA libraries installed' >&2; exit 1; fi

# weights-official (a directory of the build context holding the official files); empty: download.
ARG WEIGHTS_FROM=""
WORKDIR /build
# Only what fetching needs: the weights table and its command, so code changes elsewhere keep
# this layer (and its 890 MB download) cached.
COPY processing/__init__.py /build/processing/
COPY processing/engine/__init__.py processing/engine/store.py /build/processing/engine/
COPY processing/checkpoints/__init__.py processing/checkpoints/__main__.py processing/checkpoints/weights.py /build/processing/checkpoints/
# When WEIGHTS_FROM is empty this copies a harmless placeholder (requirements.txt) instead.
COPY ${WEIGHTS_FROM:-requirements.txt} /build/weights-from/
RUN if [ -n "${WEIGHTS_FROM}" ]; then \
        python -m processing.checkpoints fetch --all --dir /opt/weights --from /build/weights-from; \
    else \
        python -m processing.checkpoints fetch --all --dir /opt/weights; \
    fi

# ---------------------------------------------------------------------------------------------
# models: the checkpoints exported to the model store the service runs, verified
# ---------------------------------------------------------------------------------------------
FROM checkpoints AS models

COPY processing/engine/ /build/processing/engine/
COPY processing/checkpoints/ /build/processing/checkpoints/
RUN python -m processing.checkpoints export --dir /opt/weights --models-dir /opt/models \
    && test ! -e /opt/weights/STANDIN-WEIGHTS.json

# ---------------------------------------------------------------------------------------------
# final: the Functions host with our app in /home/site/wwwroot, running as a non-root user
# ---------------------------------------------------------------------------------------------
FROM base AS final

ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    FUNCTIONS_WORKER_RUNTIME=python \
    ASPNETCORE_URLS=http://+:8080 \
    HOME=/home \
    MODELS_DIR=/opt/models \
    STANDIN_WEIGHTS=false

# Root-owned and world-readable (files 0644, directories 0755): the app user reads the store
# as it is and never writes it; nothing at run time exports.
COPY --from=models /opt/models /opt/models

# The app: only what the Functions host runs (tests, infra and dev files stay out).
COPY host.json function_app.py requirements.txt /home/site/wwwroot/
COPY processing/ /home/site/wwwroot/processing/
COPY static_site/ /home/site/wwwroot/static_site/

WORKDIR /home/site/wwwroot

# In the image that ships: no build-time package is installed, the model store is official and
# every file matches its SHA-256, the app imports (headless OpenCV needs no libGL), and the
# bytecode is compiled so a cold start does not write it.
RUN python -c "import importlib.util, sys; found = [m for m in ('torch', 'torchvision', 'basicsr', 'gfpgan', 'facexlib', 'onnx') if importlib.util.find_spec(m)]; sys.exit(f'build-time packages in the image: {found}' if found else 0)" \
    && python -m processing models verify --official \
    && python -c "import azure.functions, processing.api.app, processing.worker, processing.engine.pipeline" \
    && python -m compileall -q /home/site/wwwroot/processing /home/site/wwwroot/function_app.py

# Non-root: the host writes under $HOME (logs, extension bundle cache), /tmp, and its secrets
# directory; the code, the host's own files and the models stay read-only to it. Port 8080
# because an unprivileged user cannot bind 80 everywhere (ingress targetPort / WEBSITES_PORT).
# /azure-functions-host/Secrets: outside App Service the host keeps its key sentinels there
# (and the keys themselves with file secret storage); the base image leaves it to root, and a
# non-root host fails with "Access to the path '/azure-functions-host/Secrets' is denied"
# (Azure/azure-functions-docker #1210, #424). It is made the app user's, and only it: the
# rest of /azure-functions-host stays root's. Relocating it instead would rest on the host's
# internal SecretsPath option, which no documented setting exposes.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /home/data /home/LogFiles /azure-functions-host/Secrets \
    && chown app:app /home /home/data /home/LogFiles /azure-functions-host/Secrets \
    && chmod 0700 /azure-functions-host/Secrets

USER 10001:10001
EXPOSE 8080

# For `docker run`; Container Apps and App Service use their own probes on /api/health.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/health', timeout=8)"]
