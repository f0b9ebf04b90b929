"""The image is the package: the Dockerfile's build context (the project less
`.dockerignore`), copied and installed as its COPY and RUN steps say, imports every
module of every service, and its CMD is a command of the CLI it installs.

No Docker engine is needed. The context is docker-py's tar of a build context (what
`docker build` sends to an engine, `.dockerignore` applied by docker-py's matcher);
the Dockerfile's WORKDIR and COPY steps are replayed into a folder standing for the
image's file system; what its RUN steps `pip install` from there is installed into a
fresh virtualenv. The dependencies are not installed again (`--no-deps`): the
virtualenv borrows the project's, installed from the same pins in pyproject.toml.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from docker.utils.build import exclude_paths, tar

from schemas.topics import SPECS, Topics
from tests.cli_help import cli_commands

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("edge", "edge-worker", "processor", "sink", "integrations")  # `sluice NAME` runs sluice.services.run_NAME
# pip install options that take the next word as their value.
PIP_VALUED = {"-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-t",
              "--target", "--prefix", "--root", "--cache-dir", "--progress-bar", "--root-user-action",
              "-C", "--config-settings"}


def dockerignore_patterns(context: Path) -> list[str]:
    """`.dockerignore` as docker-py's build reads it: a pattern a line; blank lines and `#` comments skipped."""
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def build_context(context: Path, into: Path) -> Path:
    """What `docker build context` sends to the engine, unpacked into `into`."""
    archive = tar(str(context), exclude=dockerignore_patterns(context))
    with tarfile.open(fileobj=archive) as unpack:
        unpack.extractall(into, filter="tar")
    archive.close()
    return into


def dockerfile_steps(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each step; continuation lines joined, comments dropped."""
    steps, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instruction, _, arguments = (pending + stripped).partition(" ")
        steps.append((instruction.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return steps


def words(arguments: str) -> list[str]:
    """The exec form (a JSON array) or the shell form, split as the shell would."""
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


class Image:
    """The image's file system as far as WORKDIR and COPY shape it (under `root`), what its
    RUN steps pip-install, and its CMD/ENTRYPOINT."""

    def __init__(self, root: Path, context: Path) -> None:
        self.root, self.context, self.workdir = root, context, "/"
        self.installs: list[Path] = []
        self.command: list[str] = []
        self.entrypoint: list[str] = []

    def at(self, path: str) -> Path:
        return self.root / posixpath.normpath(posixpath.join(self.workdir, path)).lstrip("/")

    def replay(self, steps: list[tuple[str, str]]) -> "Image":
        stages = [arguments for instruction, arguments in steps if instruction == "FROM"]
        assert len(stages) == 1, f"one build stage is reproduced here, the Dockerfile has {len(stages)}"
        for instruction, arguments in steps:
            if instruction == "WORKDIR":
                self.workdir = posixpath.join(self.workdir, arguments)
                self.at(".").mkdir(parents=True, exist_ok=True)
            elif instruction in ("COPY", "ADD"):
                self._copy(words(arguments))
            elif instruction == "RUN":
                self.installs += [self.at(target) for target in pip_install_targets(arguments)]
            elif instruction == "CMD":
                self.command = words(arguments)
            elif instruction == "ENTRYPOINT":
                self.entrypoint = words(arguments)
        return self

    def _copy(self, argv: list[str]) -> None:
        flags = [word for word in argv if word.startswith("--")]
        assert not [flag for flag in flags if flag.startswith("--from")], "COPY --from is not reproduced here"
        *sources, destination = [word for word in argv if not word.startswith("--")]
        target = self.at(destination)
        into_folder = destination.endswith("/") or len(sources) > 1 or target.is_dir() or destination == "."
        for source in sources:
            # Docker resolves sources inside the context only, wildcards as Go's filepath.Match does.
            matches = sorted(glob.glob(source, root_dir=self.context)) if glob.has_magic(source) else [source]
            assert matches, f"COPY {source}: no such file in the build context"
            for match in matches:
                found = self.context / posixpath.normpath(match)
                assert found.exists(), f"COPY {source}: {match} is not in the build context (.dockerignore?)"
                if found.is_dir():  # a folder's contents are copied, not the folder
                    shutil.copytree(found, target, symlinks=True, dirs_exist_ok=True)
                else:
                    (target if into_folder else target.parent).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(found, target / found.name if into_folder else target)


def pip_install_targets(shell: str) -> list[str]:
    """The folders each `pip install` of a RUN step installs (paths as the step wrote them)."""
    targets = []
    for command in re.split(r"&&|\|\||;", shell):
        argv = shlex.split(command)
        # `pip`, `pip3.11`, `/usr/local/bin/pip` or `python -m pip`
        pip = next((i for i, word in enumerate(argv) if re.fullmatch(r"pip[\d.]*", posixpath.basename(word))), None)
        if pip is None or "install" not in argv[pip + 1:]:
            continue
        rest = iter(argv[argv.index("install", pip) + 1:])
        for word in rest:
            if word in PIP_VALUED:
                next(rest)
            elif word in ("-r", "--requirement"):
                raise AssertionError(f"pip install -r is not reproduced here: {command.strip()}")
            elif word in ("-e", "--editable"):
                targets.append(next(rest))
            elif not word.startswith("-"):
                targets.append(word)
    for target in targets:
        assert target.startswith((".", "/")), f"the image installs {target!r} from an index, not the project"
    return targets


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    base = tmp_path_factory.mktemp("image")
    context = build_context(ROOT, base / "context")
    built = Image(base / "fs", context).replay(dockerfile_steps((context / "Dockerfile").read_text()))
    assert built.installs, "no RUN step of the Dockerfile pip-installs the project"
    return built


@pytest.fixture(scope="module")
def venv(image, tmp_path_factory) -> Path:
    """A fresh virtualenv holding what the image's RUN steps install, the dependencies borrowed."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    python = home / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Appended after the virtualenv's own site-packages: only the dependencies come from there. The
    # project's editable install in it is a path hook that a .pth listed this way never activates.
    (site / "dependencies.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")
    for folder in image.installs:
        result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                 "--quiet", str(folder)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    return home


def isolated_env(venv: Path) -> dict[str, str]:
    # Nothing of the project's checkout on the path: what imports comes from the virtualenv.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


IMPORT_EVERY_MODULE = """
import importlib, importlib.metadata, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
dist = importlib.metadata.distribution("sluice")
modules = sorted(str(f)[:-3].replace("/", ".").removesuffix(".__init__") for f in dist.files if f.suffix == ".py")
for name in modules:
    module = importlib.import_module(name)
    assert module.__file__.startswith(site), f"{name} came from {module.__file__}, not the installed package"
import sluice.services
for service in sys.argv[1:]:
    getattr(sluice.services, "run_" + service.replace("-", "_"))
print(len(modules))
"""


def test_the_build_context_leaves_out_state_secrets_and_what_is_not_the_package(tmp_path):
    # A project tree with one file in each kind of place, walked as docker-py walks a context.
    shutil.copy(ROOT / ".dockerignore", tmp_path)
    left_out = (".sluice/admin.key",  # the generated admin key; the local broker's data beside it
                ".venv/bin/python", ".git/HEAD", ".ci/run", "tests/conftest.py", "bench/out/results.json",
                "sluice/__pycache__/cli.cpython-311.pyc", "__pycache__/x.pyc", "build/lib/x.py",
                "sluice.egg-info/PKG-INFO", ".pytest_cache/v/cache")
    kept = ("pyproject.toml", "Dockerfile", "bus/health.py", "schemas/avro/raw_envelope.avsc", "sluice/kafka/pom.xml")
    for path in left_out + kept:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    context = exclude_paths(str(tmp_path), dockerignore_patterns(tmp_path))
    assert not context & set(left_out), "in the image's build context"
    assert set(kept) <= context, "missing from the image's build context"


def test_the_image_installs_every_module_of_every_service(venv, tmp_path):
    result = subprocess.run([venv / "bin" / "python", "-I", "-c", IMPORT_EVERY_MODULE, *SERVICES],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=isolated_env(venv))
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 50  # every package of the project, not a few


def test_the_image_command_is_a_command_of_its_cli(image, venv, tmp_path):
    argv = image.entrypoint + image.command
    assert argv, "the Dockerfile names no CMD or ENTRYPOINT"
    executable = venv / "bin" / argv[0]
    assert executable.exists(), f"the image's command {argv[0]!r} is not installed by the package"
    commands = cli_commands([str(executable)], cwd=tmp_path, env=isolated_env(venv))
    assert set(SERVICES) <= commands
    assert argv[1] in commands, f"`{' '.join(argv)}`: the CLI has no command {argv[1]!r}"
    # Run without a broker, the command gets as far as asking for one (past every import of its start).
    env = {**isolated_env(venv), "SLUICE_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": ""}
    result = subprocess.run([executable, *argv[1:]], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=env)
    assert result.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS must be set" in result.stderr, result.stderr[-3000:]


def test_the_installed_package_creates_the_topics(venv, kafka_bootstrap, tmp_path):
    """`sluice topics` of the image (compose runs it first) against a real broker."""
    prefix = f"image{os.getpid()}."
    env = {**isolated_env(venv), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "SLUICE_TOPIC_PREFIX": prefix,
           "SLUICE_STATE_DIR": str(tmp_path)}
    result = subprocess.run([venv / "bin" / "sluice", "topics"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=30).topics
    assert {Topics(prefix).name(spec.logical) for spec in SPECS} <= set(listed)
