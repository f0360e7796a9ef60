"""The Dockerfile and .dockerignore, read as text (Docker cannot run here).

What must hold: the Functions Python 3.11 base image; CPU-only torch at exactly the versions
requirements.txt pins, installed before the requirements; no dev/test requirements; the
official weights fetched and verified at build time; the app where the Functions host looks
for it; a non-root user; a build context without environments, tests or stray weights.
"""

from __future__ import annotations

import fnmatch
import re
from urllib.parse import urlparse

import pytest
from infra_helpers import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        pending += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
            pending = ""
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            out.append([])
        out[-1].append((keyword, args))
    return out


def runs(stage: list[tuple[str, str]] | None = None) -> str:
    return "\n".join(args for keyword, args in (stage or instructions()) if keyword == "RUN")


def arg_default(name: str) -> str:
    for keyword, args in instructions():
        if keyword == "ARG" and args.split("=", 1)[0] == name:
            return args.split("=", 1)[1].strip('"') if "=" in args else ""
    raise AssertionError(f"no ARG {name}")


def pinned(requirement: str) -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip().startswith(f"{requirement}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"requirements.txt does not pin {requirement}")


def test_base_image_is_the_functions_python_311_image():
    first = stages()[0][0]
    assert first[0] == "FROM"
    assert first[1].split()[0] == "mcr.microsoft.com/azure-functions/python:4-python3.11"


@pytest.mark.skipif(not (REPO / "requirements.txt").is_file(), reason="requirements.txt not written yet")
def test_cpu_torch_matches_the_pins_in_requirements():
    assert arg_default("TORCH_VERSION") == pinned("torch")
    assert arg_default("TORCHVISION_VERSION") == pinned("torchvision")


def test_cpu_torch_is_installed_before_the_requirements():
    text = runs()
    index = re.search(r"--index-url\s+(\S+)\s+\"?torch==\$\{TORCH_VERSION\}\"?\s+\"?torchvision==\$\{TORCHVISION_VERSION\}", text)
    assert index, "torch/torchvision must be installed from the CPU index at the ARG versions"
    url = urlparse(index.group(1))
    assert url.scheme == "https" and url.path.rstrip("/") == "/whl/cpu", index.group(1)
    requirements = text.find("pip install -r /tmp/requirements.txt")
    assert requirements > index.start(), "requirements.txt must come after the CPU torch install"
    # and the build refuses a CUDA torch or drifting pins
    assert "torch.version.cuda" in text
    assert 'grep -qx "torch==${TORCH_VERSION}"' in text


def test_uses_the_pinned_requirements_and_never_the_dev_ones():
    copies = [args for keyword, args in instructions() if keyword == "COPY"]
    assert any(args.split()[0] == "requirements.txt" for args in copies)
    for keyword, args in instructions():
        assert "requirements-dev" not in args, f"{keyword} {args}"


def test_weights_are_fetched_and_verified_at_build_time():
    weights_stage = next(s for s in stages() if "AS weights" in s[0][1])
    text = runs(weights_stage)
    fetch = text.find("python -m processing weights fetch")
    verify = text.find("python -m processing weights verify")
    export = text.find("python -m processing.onnx_runtime export")
    assert 0 <= fetch < verify < export, "the ONNX export is made from verified weights, at build time"
    assert "--from" in text and "WEIGHTS_FROM" in text, "a build argument must be able to point fetch at a local copy"
    assert ("ARG", 'WEIGHTS_FROM=""') in weights_stage
    # the shipped stage verifies again and takes the weights only from the verified stage
    final = stages()[-1]
    assert ("COPY", "--from=weights /opt/weights /opt/weights") in final
    assert "python -m processing weights verify" in runs(final)
    assert "STANDIN-WEIGHTS.json" in runs(final), "stand-in weights must be refused"


def test_final_stage_runs_the_function_app_as_a_non_root_user():
    final = stages()[-1]
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in env
    assert "WEIGHTS_DIR=/opt/weights" in env and "STANDIN_WEIGHTS=false" in env
    copied = " ".join(args for keyword, args in final if keyword == "COPY")
    for path in ("host.json", "function_app.py", "processing/"):
        assert path in copied
    assert "/home/site/wwwroot" in copied
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    # the port the Bicep points ingress / WEBSITES_PORT at
    assert "ASPNETCORE_URLS=http://+:8080" in env
    bicep = (REPO / "infra" / "modules" / "hosting-containerapps.bicep").read_text()
    assert "param targetPort int = 8080" in bicep


# --- .dockerignore ---------------------------------------------------------------------------


def ignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def excluded(path: str) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; '!' re-includes."""
    verdict = False
    for pattern in ignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = {pattern, pattern.replace("**/", "")}
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for c in candidates for p in prefixes) or any(
            fnmatch.fnmatch(parts[-1], c) for c in candidates if "/" not in c
        ):
            verdict = not negate
    return verdict


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".venv-checkov/bin/checkov", "tests/infra/conftest.py", "node_modules/azurite/package.json",
     ".git/HEAD", "weights/GFPGANv1.4.pth", "weights/STANDIN-WEIGHTS.json", ".cache/weights/x.pth",
     "requirements-dev.txt", "local.settings.json", "infra/main.bicep", "processing/__pycache__/x.pyc"],
)
def test_dockerignore_keeps_out(path: str):
    assert excluded(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize(
    "path",
    ["requirements.txt", "host.json", "function_app.py", "processing/weights.py", "static_site/index.html",
     "Dockerfile", "weights-official/GFPGANv1.4.pth"],
)
def test_dockerignore_keeps_in(path: str):
    assert not excluded(path), f".dockerignore drops {path}, which the image needs"
