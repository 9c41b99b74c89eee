"""The Python SDK: ``mlengine.Client().jobs.submit_training(...)`` and `Job` handles."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.client._http import APIClient
from mlengine.client._models_sdk import ModelsAPI, OperationsAPI, VersionsAPI
from mlengine.config import Settings
from mlengine.jobs._packaging import build_package, validate_package_files
from mlengine.jobs._state import JobState
from mlengine.jobs._submission import build_training_job, load_job_config, parse_labels

__all__ = ["Client", "Job", "JobsAPI"]

_FIRST_LOG_POLL_S = 0.02


class Client:
    """Entry point of the SDK, shaped like the REST API it calls.

    Settings resolve as everywhere in mlengine (arguments > ``MLENGINE_*`` > config file >
    defaults). A local server is started when none answers on a loopback `api_url`.

    Example::

        job = mlengine.Client().jobs.submit_training(
            "iris_1", module_name="trainer.task", package_path="examples/iris/trainer",
            job_dir="out/iris_1", args=["--epochs", "3"])
        job.wait()
    """

    def __init__(
        self,
        api_url: str | None = None,
        project: str | None = None,
        *,
        home: str | None = None,
        api_token: str | None = None,
        autostart: bool = True,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.load(
            {"api_url": api_url, "project": project, "home": home, "api_token": api_token}
        )
        self.project: str = self.settings.project
        self.api = APIClient(self.settings, autostart=autostart)
        self.jobs = JobsAPI(self)
        self.models = ModelsAPI(self)
        self.versions = VersionsAPI(self)
        self.operations = OperationsAPI(self)

    def predict(
        self, model: str, instances: Sequence[Any], *, version: str | None = None, **fields: Any
    ) -> list[Any]:
        """Online prediction (see `ModelsAPI.predict`)."""
        return self.models.predict(model, instances, version=version, **fields)

    def explain(
        self, model: str, instances: Sequence[Any], *, version: str | None = None, **fields: Any
    ) -> list[dict[str, Any]]:
        """Feature attributions (see `ModelsAPI.explain`)."""
        return self.models.explain(model, instances, version=version, **fields)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class JobsAPI:
    """``projects.jobs``: submit, get, list, cancel."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _base(self) -> str:
        return f"/v1/projects/{self._client.project}/jobs"

    def create(self, body: Mapping[str, Any]) -> Job:
        """Create a job from a full ml v1 `Job` body."""
        resource = self._client.api.request("POST", self._base, json=dict(body))
        return Job(self._client, resource)

    def stage_package(self, path: Path) -> str:
        """Upload a package file to the server's staging area; return its URI.

        Raises:
            InvalidArgument: not an existing .tar.gz, .zip or .whl archive.
        """
        validate_package_files([path])
        return self._upload_package(path)

    def _upload_package(self, path: Path) -> str:
        """Upload a package file already checked; return its URI."""
        answer = self._client.api.request(
            "POST",
            f"/upload/v1/projects/{self._client.project}/packages",
            params={"name": path.name},
            content=path.read_bytes(),
        )
        return str(answer["uri"])

    def submit_training(
        self,
        job_id: str,
        *,
        module_name: str | None = None,
        package_path: str | Path | None = None,
        packages: Sequence[str | Path] = (),
        job_dir: str | Path | None = None,
        args: Sequence[str] = (),
        config: str | Path | Mapping[str, Any] | None = None,
        scale_tier: str | None = None,
        labels: str | Mapping[str, str] | None = None,
        **machine_flags: Any,
    ) -> Job:
        """Package, stage and submit a training job; returns at once (the job is QUEUED).

        `package_path` is built as gcloud builds it (an sdist; a setup.py is generated when its
        parent has none); local `packages` are uploaded, URLs are passed through. Remaining
        keyword arguments are the machine flags of `build_training_job` (``worker_count``,
        ``master_machine_type``, ``region``, ...).

        Raises:
            InvalidArgument: bad flags, config or package.
            AlreadyExists: the job id is taken.
        """
        job_config = load_job_config(config) if isinstance(config, (str, Path)) else config
        uris: list[str] = []
        local_packages = [Path(p) for p in packages if "://" not in str(p)]
        validate_package_files(local_packages)
        with tempfile.TemporaryDirectory(prefix="mlengine-package-") as staging:
            if package_path is not None:
                built = build_package(Path(package_path), Path(staging))
                uris.append(self._upload_package(built))
            for package in packages:  # the local ones checked above, before any upload
                if "://" in str(package):
                    uris.append(str(package))
                else:
                    uris.append(self._upload_package(Path(package)))
        directory = None
        if job_dir is not None:
            directory = str(job_dir)
            if "://" not in directory:
                directory = str(Path(directory).expanduser().resolve())
        body = build_training_job(
            job_id,
            config=job_config,
            module_name=module_name,
            package_uris=uris,
            job_dir=directory,
            args=args,
            scale_tier=scale_tier,
            labels=parse_labels(labels),
            **machine_flags,
        )
        return self.create(body)

    def get(self, job_id: str) -> Job:
        """The job `job_id`.

        Raises:
            NotFound: no such job.
        """
        return Job(self._client, self._client.api.request("GET", f"{self._base}/{job_id}"))

    def list_page(
        self, filter: str | None = None, page_size: int | None = None, page_token: str | None = None
    ) -> tuple[list[Job], str | None]:
        """One page of jobs, newest first, and the token of the next page."""
        answer = self._client.api.request(
            "GET",
            self._base,
            params={"filter": filter, "pageSize": page_size, "pageToken": page_token},
        )
        jobs = [Job(self._client, resource) for resource in answer.get("jobs", [])]
        return jobs, answer.get("nextPageToken")

    def list(
        self, filter: str | None = None, page_size: int | None = None, limit: int | None = None
    ) -> Iterator[Job]:
        """Every job matching `filter` (server-side ml v1 syntax), newest first."""
        token: str | None = None
        count = 0
        while True:
            jobs, token = self.list_page(filter, page_size, token)
            for job in jobs:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield job
            if not token:
                return

    def cancel(self, job_id: str) -> None:
        """Cancel a job.

        Raises:
            FailedPrecondition: it has already finished.
        """
        self._client.api.request("POST", f"{self._base}/{job_id}:cancel")


class Job:
    """A handle on one job: its last-read `resource`, `refresh`, `wait`, `logs`, `cancel`."""

    def __init__(self, client: Client, resource: Mapping[str, Any]) -> None:
        self._client = client
        self.resource: dict[str, Any] = dict(resource)

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, state={self.resource.get('state')!r})"

    @property
    def job_id(self) -> str:
        """The job id."""
        return str(self.resource["jobId"])

    @property
    def state(self) -> JobState:
        """The job's current state (read from the server)."""
        return JobState(self.refresh()["state"])

    @property
    def error_message(self) -> str:
        """`errorMessage` as last read."""
        return str(self.resource.get("errorMessage", ""))

    def refresh(self) -> dict[str, Any]:
        """Read the job again and return its resource."""
        self.resource = self._client.jobs.get(self.job_id).resource
        return self.resource

    def wait(self, timeout: float | None = None, poll_interval: float = 0.25) -> Job:
        """Block until the job ends; return self.

        Raises:
            TimeoutError: it did not end within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not JobState(self.refresh()["state"]).is_terminal():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"Job {self.job_id} is still {self.resource['state']} after {timeout} s."
                )
            time.sleep(poll_interval)
        return self

    def logs(
        self, follow: bool = False, task_name: str | None = None, poll_interval: float = 0.5
    ) -> Iterator[dict[str, Any]]:
        """Log entries (``timestamp``, ``severity``, ``taskName``, ``message``); with `follow`,
        keep reading until the job ends."""
        token: str | None = None
        path = f"/v1/projects/{self._client.project}/jobs/{self.job_id}:logs"
        wait = _FIRST_LOG_POLL_S
        while True:
            answer = self._client.api.request(
                "GET", path, params={"pageToken": token, "taskName": task_name}
            )
            yield from answer.get("entries", [])
            token = answer.get("nextPageToken") or token
            if answer.get("done") or (not follow and not answer.get("entries")):
                return
            if answer.get("entries"):
                wait = _FIRST_LOG_POLL_S
            else:  # back off from a quick first poll to `poll_interval` while nothing comes
                time.sleep(wait)
                wait = min(poll_interval, wait * 2)

    def cancel(self) -> None:
        """Cancel the job."""
        self._client.jobs.cancel(self.job_id)
