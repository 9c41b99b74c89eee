"""Fixtures of the server tests: one real ``mlengine server run`` per test module (starting a
server and building the trainer's environment costs seconds, so tests share them and keep
apart by using a project of their own), the test trainer staged as a package, and `JobsApi`,
the ml v1 jobs routes through raw httpx."""

from __future__ import annotations

import textwrap
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlengine.config import Settings
from mlengine.jobs._packaging import build_package
from mlengine.store import MetadataStore

from ._jobs_api import ACTIVE, JobsApi

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def root_conftest(config: pytest.Config) -> types.ModuleType:
    """``tests/conftest.py`` as pytest loaded it (``ServerProcess``, ``TRAINER``, ``free_port``).

    Found through the plugin manager: every ``conftest.py`` outside a package is imported as
    the module ``conftest``, so ``import conftest`` may give another directory's.
    """
    for plugin in config.pluginmanager.get_plugins():
        location = getattr(plugin, "__file__", None)
        if location and Path(location).resolve() == ROOT_CONFTEST:
            assert isinstance(plugin, types.ModuleType)
            return plugin
    raise RuntimeError(f"{ROOT_CONFTEST} is not loaded")


@pytest.fixture(scope="module")
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A real API server (with its scheduler) on a fresh MLENGINE_HOME, shared by a module.

    The environment is set as the ``home`` fixture sets it, only while the server starts.
    At the end, jobs still active are cancelled so that no trainer outlives the module.
    """
    helpers = root_conftest(request.config)
    home = tmp_path_factory.mktemp("server") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLENGINE_HOME", str(home))
        patch.setenv("MLENGINE_API_URL", f"http://127.0.0.1:{helpers.free_port()}")
        patch.setenv("MLENGINE_CANCEL_GRACE_SECONDS", "2")
        for variable in ("MLENGINE_DATABASE_URL", "MLENGINE_ARTIFACT_ROOT", "MLENGINE_PROJECT",
                         "MLENGINE_CONFIG", "MLENGINE_API_TOKEN", "TF_CONFIG"):  # fmt: skip
            patch.delenv(variable, raising=False)
        process = helpers.ServerProcess(Settings.load()).start()
    try:
        yield process
    finally:
        try:
            _cancel_active_jobs(process.url, process.settings.database_url)
        finally:
            process.stop()


def _cancel_active_jobs(url: str, database_url: str) -> None:
    store = MetadataStore(database_url)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            for job in store.jobs_in_states(ACTIVE):
                client.post(f"/v1/projects/{job.project}/jobs/{job.job_id}:cancel")
            deadline = time.monotonic() + 20
            while store.jobs_in_states(ACTIVE) and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def stage_trainer(
    request: pytest.FixtureRequest, module_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """Build the test trainer (``trainer.task``) as an sdist, stage it on `module_server` and
    return its URI. Each `variant` gives a package of different content, so a job that uses
    it builds an environment of its own."""
    trainer = textwrap.dedent(root_conftest(request.config).TRAINER)

    def stage(variant: str = "") -> str:
        source = tmp_path_factory.mktemp("trainer-src")
        package = source / "src" / "trainer"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"# {variant}\n" if variant else "")
        (package / "task.py").write_text(trainer)
        sdist = build_package(package, source / "dist")
        response = httpx.post(
            f"{module_server.url}/upload/v1/projects/staging/packages",
            params={"name": "trainer-0.0.0.tar.gz"},
            content=sdist.read_bytes(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        uri: str = response.json()["uri"]
        return uri

    return stage


@pytest.fixture(scope="module")
def package_uri(stage_trainer: Callable[[str], str]) -> str:
    """The staged test trainer that most jobs of a module use (its environment is cached)."""
    return stage_trainer("")


@pytest.fixture(scope="module")
def job_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parent of every job's ``jobDir`` in a module."""
    return tmp_path_factory.mktemp("job-dirs")


@pytest.fixture
def project() -> str:
    """A project of the test's own, so that lists and filters see only its jobs."""
    return f"p-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def jobs_api(
    module_server: Any, project: str, package_uri: str, job_dirs: Path
) -> Iterator[JobsApi]:
    """`JobsApi` on the module's server, in the test's project."""
    with httpx.Client(base_url=module_server.url, timeout=30) as client:
        yield JobsApi(client, project, package_uri, job_dirs, module_server.settings.home_path)
