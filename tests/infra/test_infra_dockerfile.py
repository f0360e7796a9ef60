"""The Dockerfile and .dockerignore, read as text (Docker cannot run here), checked against
the requirement split.

What must hold: the Functions Python 3.11 base image, pinned by digest; the final stage
built on the run-time requirements only (no torch, no upstream model packages, no
checkpoints), with the exported model store copied read-only from the stage that made and
verified it; CPU-only torch at exactly the pinned versions in the build stages; the
checkpoint download cached across code changes; the app where the Functions host looks for
it; a non-root user; a build context without environments, tests or stray weights.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from urllib.parse import urlparse

import pytest
from infra_helpers import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_ONLY = ("torch", "torchvision", "basicsr", "gfpgan", "facexlib", "onnx")


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


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, FROM first."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in instructions():
        if keyword == "FROM":
            current = args.split(" AS ")[-1].strip() if " AS " in args else args
            out[current] = []
        if current is not None:
            out[current].append((keyword, args))
    return out


def runs(stage: list[tuple[str, str]]) -> str:
    return "\n".join(args for keyword, args in stage if keyword == "RUN")


def arg_default(name: str) -> str:
    for keyword, args in instructions():
        if keyword == "ARG" and args.split("=", 1)[0] == name:
            return args.split("=", 1)[1].strip('"') if "=" in args else ""
    raise AssertionError(f"no ARG {name}")


def requirements(name: str) -> dict[str, str]:
    """Package (lower case) -> pinned version, from one requirements file."""
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, _, version = line.partition("==")
            assert version, f"{name}: {line} is not pinned"
            pins[package.strip().lower()] = version.strip()
    return pins


def test_the_stages_and_their_parents():
    parents = {name: stage[0][1].split()[0] for name, stage in stages().items()}
    assert list(parents) == ["base", "checkpoints", "models", "final"]
    assert parents["checkpoints"] == "base" and parents["models"] == "checkpoints" and parents["final"] == "base"


def test_base_image_is_the_functions_python_311_image_pinned_by_digest():
    image, _, digest = stages()["base"][0][1].split()[0].partition("@")
    assert image == "mcr.microsoft.com/azure-functions/python:4-python3.11"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), "the base image is pinned by digest"


def test_the_run_time_requirements_hold_no_build_tool():
    runtime = requirements("requirements.txt")
    for package in BUILD_ONLY + ("opencv-python",):
        assert package not in runtime, f"requirements.txt must not pin {package}"
    assert "opencv-python-headless" in runtime, "headless OpenCV: no libGL in the image"
    build = {**requirements("requirements-build.txt"), **requirements("requirements-upstream.txt")}
    assert set(BUILD_ONLY) <= set(build)
    assert not set(build) & set(runtime), "a package belongs to one set"


def test_base_and_final_stages_install_the_run_time_set_only():
    base, final = stages()["base"], stages()["final"]
    copied = [args for keyword, args in base if keyword == "COPY"]
    assert copied == ["requirements.txt /tmp/requirements.txt"]
    assert "pip install -r /tmp/requirements.txt" in runs(base)
    assert "pip install" not in runs(final), "the final stage adds no package to the run-time set"
    for keyword, args in base + final:
        for name in ("requirements-build", "requirements-upstream", "requirements-dev", "libgl"):
            assert name not in args.lower(), f"{keyword} {args}"


def test_cpu_torch_is_installed_in_the_build_stage_at_the_pins():
    build = requirements("requirements-build.txt")
    assert arg_default("TORCH_VERSION") == build["torch"]
    assert arg_default("TORCHVISION_VERSION") == build["torchvision"]
    text = runs(stages()["checkpoints"])
    index = re.search(r"--index-url\s+(\S+)\s+\"?torch==\$\{TORCH_VERSION\}\"?\s+\"?torchvision==\$\{TORCHVISION_VERSION\}", text)
    assert index, "torch/torchvision must be installed from the CPU index at the ARG versions"
    url = urlparse(index.group(1))
    assert url.scheme == "https" and url.path.rstrip("/") == "/whl/cpu", index.group(1)
    assert text.find("pip install -r /tmp/requirements-build.txt") > index.start()
    assert "pip install --no-deps --no-build-isolation -r /tmp/requirements-upstream.txt" in text
    assert "torch.version.cuda" in text and 'grep -qx "torch==${TORCH_VERSION}"' in text


def test_checkpoints_are_fetched_verified_and_exported_at_build_time():
    checkpoints, models = stages()["checkpoints"], stages()["models"]
    text = runs(checkpoints)
    assert "python -m processing.checkpoints fetch --all --dir /opt/weights --from /build/weights-from" in text
    assert "python -m processing.checkpoints fetch --all --dir /opt/weights;" in text
    assert ("ARG", 'WEIGHTS_FROM=""') in checkpoints
    export = runs(models)
    assert "python -m processing.checkpoints export --dir /opt/weights --models-dir /opt/models" in export
    assert "test ! -e /opt/weights/STANDIN-WEIGHTS.json" in export, "stand-in weights must be refused"


def test_the_download_layer_depends_on_the_weights_table_only(tmp_path):
    """The checkpoints stage copies a handful of files before its fetch, not processing/, so a
    code change elsewhere keeps the 890 MB layer cached; and those files are enough: the fetch
    and verify commands run from a copy of exactly them."""
    checkpoints = stages()["checkpoints"]
    copies = [args.split() for keyword, args in checkpoints if keyword == "COPY"]
    sources = [path for args in copies for path in args[:-1] if path.startswith("processing")]
    assert sources and all(path.endswith(".py") for path in sources), sources
    for path in sources:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, target)
    run = subprocess.run([sys.executable, "-m", "processing.checkpoints", "verify", "--dir", str(tmp_path / "empty")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "GFPGANv1.4.pth missing" in run.stdout, run.stderr
    assert "fetch" in subprocess.run([sys.executable, "-m", "processing.checkpoints", "fetch", "--help"], cwd=tmp_path,
                                     capture_output=True, text=True, timeout=60).stdout


def test_final_stage_ships_the_verified_store_and_no_build_package():
    final = stages()["final"]
    assert ("COPY", "--from=models /opt/models /opt/models") in final
    assert not any("/opt/weights" in args for keyword, args in final), "checkpoints stay in the build stages"
    text = runs(final)
    assert "python -m processing models verify --official" in text
    check = re.search(r"for m in \(([^)]*)\) if importlib.util.find_spec\(m\)", text)
    assert check and {name.strip(" '") for name in check.group(1).split(",")} == set(BUILD_ONLY)


def test_final_stage_runs_the_function_app_as_a_non_root_user():
    final = stages()["final"]
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in env
    assert "MODELS_DIR=/opt/models" in env and "STANDIN_WEIGHTS=false" in env
    copied = " ".join(args for keyword, args in final if keyword == "COPY")
    for path in ("host.json", "function_app.py", "processing/"):
        assert path in copied
    assert "/home/site/wwwroot" in copied
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(keyword == "HEALTHCHECK" and "/api/health" in args for keyword, args in final)
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
    ["requirements.txt", "requirements-build.txt", "requirements-upstream.txt", "host.json", "function_app.py",
     "processing/checkpoints/weights.py", "static_site/index.html", "Dockerfile", "weights-official/GFPGANv1.4.pth"],
)
def test_dockerignore_keeps_in(path: str):
    assert not excluded(path), f".dockerignore drops {path}, which the image needs"


# --- the Functions host as a non-root user -----------------------------------------------------

# Where the host keeps its secrets (key sentinels; the keys with file storage) outside App Service,
# as Azure/azure-functions-docker #1210 reports it: "System.UnauthorizedAccessException: Access to
# the path '/azure-functions-host/Secrets' is denied" for a non-root container user (also #424).
HOST_SECRETS = "/azure-functions-host/Secrets"


def _final_user() -> tuple[str, str]:
    """(user, uid) the final stage runs as: USER may name the user or its uid."""
    final = stages()["final"]
    (user,) = [args for keyword, args in final if keyword == "USER"][-1:]
    match = re.search(r"useradd [^&]*--uid (\d+) [^&]* (\w+)\s*(?:&&|$)", runs(final))
    assert match, "the final stage creates no user with a fixed uid"
    uid, name = match.groups()
    assert user.split(":")[0] in (uid, name), f"USER {user} is not the user the stage creates ({name}, {uid})"
    return name, uid


def test_the_host_runs_as_uid_10001():
    name, uid = _final_user()
    assert uid == "10001"


def test_the_host_secrets_directory_belongs_to_the_app_user():
    final = stages()["final"]
    name, uid = _final_user()
    position = {index: args for index, (keyword, args) in enumerate(final) if keyword == "RUN"}
    user_at = next(i for i, (keyword, _) in enumerate(final) if keyword == "USER")
    steps = [args for i, args in sorted(position.items()) if i < user_at]
    text = "\n".join(steps)
    assert re.search(rf"mkdir -p [^&]*{re.escape(HOST_SECRETS)}\b", text), f"{HOST_SECRETS} is not created"
    chown = re.search(rf"chown (\S+) [^&]*{re.escape(HOST_SECRETS)}\b", text)
    assert chown and chown.group(1).split(":")[0] in (name, uid), f"{HOST_SECRETS} is not the app user's"
    # Only that directory: the host's own files stay root's (read-only to the app user).
    assert not re.search(r"chown -R \S+ /azure-functions-host\b(?!/)", text)
    assert not re.search(r"chmod [^&]*(777|o\+w)[^&]*/azure-functions-host", text)
    # The user exists before its directory is given to it.
    assert text.find("useradd") < text.find(f"chown {chown.group(1)}")
