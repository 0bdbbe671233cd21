"""The step image's supply chain, checked without an engine: hash-pinned locks, a base
pinned by digest, the proxy CA only as a build secret, provenance labels, the refusal of
an image that is not the checkout, and the scripts' choice of engine and base (against a
fake engine CLI)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.image.conftest import refusal

pytestmark = pytest.mark.code

DOCKERFILE = (ROOT / "infra/docker/Dockerfile").read_text()
LOCKS = ["requirements-dev.lock", "requirements-gpu.lock", "requirements-cpu.lock"]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)")


def _pins(lock: str) -> dict[str, str]:
    """name -> version of every requirement; fails on an entry without a sha256 hash."""
    pins: dict[str, str] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
    for entry in entries:
        if match := PIN.match(entry):
            assert "--hash=sha256:" in entry, f"{lock}: {match.group(1)} has no hash"
            pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_every_lock_pins_every_requirement_with_hashes_and_no_torch(lock):
    pins = _pins(lock)
    assert len(pins) > 100
    assert not [name for name in pins if name == "torch" or name.startswith("torch")]


def test_the_gpu_and_cpu_locks_pin_the_same_runtime_but_for_cuda():
    """The GPU lock is the CPU lock with TensorFlow itself for tensorflow-cpu, plus the
    CUDA libraries that `tensorflow[and-cuda]` of that version asks for; both pin what
    the dev lock (the suite's environment) pins."""
    gpu, cpu = _pins("requirements-gpu.lock"), _pins("requirements-cpu.lock")
    assert gpu.pop("tensorflow") == cpu.pop("tensorflow-cpu")
    cuda = {name for name in gpu if name.startswith("nvidia-")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= cuda
    assert {name: v for name, v in gpu.items() if name not in cuda} == cpu
    dev = _pins("requirements-dev.lock")
    assert all(dev[name] == version for name, version in cpu.items())
    assert "tensorflow[and-cuda]" in (ROOT / "Makefile").read_text()  # how `make lock` makes it


def test_the_serving_lock_pins_the_dev_locks_versions_and_no_tensorflow():
    """The serving image runs what the suite tested (the dev lock's versions), and none of
    TensorFlow, Keras or the training stack."""
    serve, dev = _pins("requirements-serve.lock"), _pins("requirements-dev.lock")
    assert {"onnxruntime", "mlflow-skinny", "simplejpeg", "pillow", "numpy"} <= set(serve)
    assert all(dev[name] == version for name, version in serve.items())
    heavy = {"tensorflow", "tensorflow-cpu", "keras", "scikit-learn", "great-expectations"}
    assert not heavy & set(serve)


def test_the_dockerfile_installs_by_hash_from_a_digest_pinned_base_without_copying_a_ca():
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:[\w.-]+@sha256:[0-9a-f]{64}", base)
    joined = DOCKERFILE.replace("\\\n", " ")  # continuation lines joined
    installs = re.findall(r"pip install.*", joined)
    assert len(installs) == 4 and all("--no-compile" in i for i in installs)  # steps, serving
    locks = [i for i in installs if " -r " in i]
    assert len(locks) == 2 and all("--require-hashes" in i and "--no-deps" in i for i in locks)
    assert all("pip check" in i for i in locks)  # each lock, as it is, meets every requirement
    assert "--mount=type=secret,id=pip_ca" in DOCKERFILE
    copies = [line for line in DOCKERFILE.splitlines() if line.startswith("COPY")]
    assert not [c for c in copies if "pem" in c or "ca" in c.split()[1:2]]
    labels = set(re.findall(r"(org\.opencontainers\.image\.[\w.]+)=", DOCKERFILE))
    assert {
        f"org.opencontainers.image.{k}"
        for k in ("revision", "source", "created", "version", "base.name", "base.digest")
    } <= labels


@pytest.mark.parametrize(
    ("revision", "dirty", "refused"),
    [("abc", False, False), ("abc", True, True), ("abc-dirty", False, True), ("", False, True)],
)
def test_image_tests_refuse_an_image_that_is_not_the_clean_head(revision, dirty, refused):
    assert (refusal(revision, "abc", dirty) is not None) == refused


def _fake_engine(tmp_path: Path, images: dict[str, dict]) -> Path:
    """An engine CLI that answers `info`, `--version` (a docker before 23, no buildx),
    `image inspect`, `images`, `pull` (no registry), `import`, `rmi` and `build` for
    ``images`` (name -> {"id", "repo_digests"}) the way docker does, keeping them in a
    JSON file beside it, logging every call and keeping the last build's arguments."""
    state = tmp_path / "engine-images.json"
    state.write_text(json.dumps(images))
    script = tmp_path / "engine"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/usr/bin/env python3
            import fnmatch, json, os, sys
            state = {str(state)!r}
            images = json.load(open(state))
            args = sys.argv[1:]
            open(state + ".log", "a").write(" ".join(args) + "\\n")
            fmt = args[args.index("--format") + 1] if "--format" in args else ""
            if args[:1] == ["info"]:
                sys.exit(0)
            if args[:1] == ["--version"]:
                print("Docker version 20.10.24+dfsg1, build 297e128")
                sys.exit(0)
            if args[:1] == ["build"]:
                build = {{"args": args, "buildkit": os.environ.get("DOCKER_BUILDKIT")}}
                json.dump(build, open(state + ".build", "w"))
                sys.exit(0)
            if args[:2] == ["image", "inspect"]:
                image = images.get(args[-1])
                if image is None:
                    sys.exit(1)
                if "RepoDigests" in fmt and "len" in fmt:
                    print(len(image["repo_digests"]))
                elif "RepoDigests" in fmt:
                    print(" ".join(image["repo_digests"]))
                elif ".Id" in fmt:
                    print(image["id"])
                sys.exit(0)
            if args[:1] == ["images"]:
                pattern = args[args.index("--filter") + 1].split("=", 1)[1]
                print("\\n".join(n for n in images if fnmatch.fnmatch(n, pattern)))
                sys.exit(0)
            if args[:1] == ["import"]:
                images[args[-1]] = {{"id": "sha256:" + "9" * 64, "repo_digests": []}}
            elif args[:1] == ["rmi"]:
                images.pop(args[-1])
            else:
                sys.exit(1)  # pull: no registry
            json.dump(images, open(state, "w"))
            """
        )
    )
    script.chmod(0o755)
    return script


def _base(engine: Path, *ref: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "infra/docker/base-image.sh"), str(engine), *ref],
        capture_output=True,
        text=True,
    )


def test_the_base_is_the_official_one_when_present_else_the_newest_stand_in(tmp_path):
    official = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    stand_ins = {
        "skinlesion-base:bookworm-20261101": {"id": "sha256:" + "1" * 64, "repo_digests": []},
        "skinlesion-base:bookworm-20261130": {"id": "sha256:" + "2" * 64, "repo_digests": []},
    }
    found = _base(_fake_engine(tmp_path, stand_ins))
    assert found.stdout.split() == ["skinlesion-base:bookworm-20261130", "sha256:" + "2" * 64]

    with_official = {**stand_ins, official: {"id": "sha256:" + "3" * 64, "repo_digests": []}}
    found = _base(_fake_engine(tmp_path, with_official))
    assert found.stdout.split() == [official, official.split("@")[1]]

    gpu = {"tensorflow/tensorflow:2.21.0-gpu": {"id": "x", "repo_digests": ["t@sha256:ab"]}}
    found = _base(_fake_engine(tmp_path, gpu), "tensorflow/tensorflow:2.21.0-gpu")
    assert found.stdout.split() == ["tensorflow/tensorflow:2.21.0-gpu", "sha256:ab"]

    empty = _base(_fake_engine(tmp_path, {}))
    assert empty.returncode == 1 and "run infra/docker/local-engine.sh" in empty.stderr


def test_the_build_uses_buildkit_the_ca_as_a_secret_and_labels_the_revision(tmp_path):
    stand_in = {
        "skinlesion-base:bookworm-20261130": {"id": "sha256:" + "2" * 64, "repo_digests": []}
    }
    engine = _fake_engine(tmp_path, stand_in)
    ca = tmp_path / "proxy-ca.pem"
    ca.write_text("not a real CA")
    done = subprocess.run(
        [str(ROOT / "infra/docker/build.sh"), "skinlesion:test"],
        capture_output=True,
        text=True,
        env={**os.environ, "ENGINE": str(engine), "PIP_CA": str(ca)},
    )
    assert done.returncode == 0, done.stderr
    build = json.loads((tmp_path / "engine-images.json.build").read_text())
    assert build["buildkit"] == "1"
    args = build["args"]
    assert args[args.index("--secret") + 1] == f"id=pip_ca,src={ca}"
    built = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--build-arg")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    assert built["REVISION"] == head.stdout.strip() + ("-dirty" if dirty else "")
    assert built["BASE_IMAGE"] == "skinlesion-base:bookworm-20261130"
    assert built["BASE_DIGEST"] == "sha256:" + "2" * 64
    assert built["VERSION"] and built["CREATED"].endswith("Z")
    assert args[-3:] == ["-t", "skinlesion:test", "."]
    assert not list(ROOT.glob("*.pem"))  # nothing written into the tree


def _stub_bin(tmp_path: Path, commands: dict[str, str]) -> Path:
    """A folder of shell stubs, put first on PATH to stand in for system commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in commands.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _local_engine(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "infra/docker/local-engine.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "ENGINE_DIR": str(tmp_path)},
    )


def test_local_engine_says_it_needs_root_to_start_an_engine(tmp_path):
    stubs = {"docker": "exit 1", "podman": "exit 1", "id": "echo 1000"}
    done = _local_engine(tmp_path, _stub_bin(tmp_path, stubs))
    assert done.returncode == 1
    assert "starting Docker's engine needs root" in done.stderr


def test_without_a_registry_the_stand_in_gets_a_name_of_its_own(tmp_path):
    official = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    tag = official.split("@")[0]
    old_stand_in = {tag: {"id": "sha256:" + "1" * 64, "repo_digests": []}}
    engine = _fake_engine(tmp_path, old_stand_in)
    bin_dir = _stub_bin(
        tmp_path,
        {
            "docker": f'exec {engine} "$@"',
            "podman": "exit 1",
            "id": "echo 0",
            "dpkg": "exit 0",  # every package present
            "mmdebstrap": 'for last; do :; done; echo "$@" > "$last.args"; : > "$last"; '
            'tar -cf "$last" -T /dev/null',
        },
    )
    done = _local_engine(tmp_path, bin_dir)
    assert done.returncode == 0, done.stderr
    images = json.loads((tmp_path / "engine-images.json").read_text())
    [stand_in] = images
    assert re.fullmatch(r"skinlesion-base:bookworm-\d{8}", stand_in)
    assert f"removed {tag}" in done.stdout and f"make image builds on: {stand_in}" in done.stdout
    [args] = [p.read_text() for p in tmp_path.glob("*.tar.args")]
    assert 'rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' in args
