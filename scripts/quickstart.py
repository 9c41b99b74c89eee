"""The end-to-end demo of `make quickstart`: explore the iris sample with SQL, train the iris
example as a queued job, deploy its model and predict.

Uses the embedded defaults (``~/.mlengine``: SQLite metadata, local artifacts, a local server
started on demand) and shows what a user of ``gcloud ai-platform`` would do, with ``mlengine``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mlengine.config import Settings

REPO = Path(__file__).resolve().parent.parent


def mlengine(*args: str) -> None:
    """Run one CLI command, echoing it as a user would type it."""
    print(f"\n$ mlengine {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "mlengine", *args], check=True)


def main() -> None:
    """Explore the iris sample with SQL, train the iris example as a job, then deploy its
    model as a version and predict."""
    settings = Settings.load()
    mlengine("datasets", "load-sample", "iris")
    mlengine(
        "sql",
        "SELECT species, COUNT(*) AS flowers, ROUND(AVG(petal_length), 2) AS avg_petal_length "
        "FROM samples.iris GROUP BY species ORDER BY species",
    )
    job_id = time.strftime("iris_%Y%m%d_%H%M%S")
    job_dir = settings.home_path / "quickstart" / job_id
    mlengine(
        "jobs",
        "submit",
        "training",
        job_id,
        "--module-name",
        "trainer.task",
        "--package-path",
        str(REPO / "examples" / "iris" / "trainer"),
        "--job-dir",
        str(job_dir),
        "--labels",
        "example=iris",
        "--stream-logs",
        "--",
        "--epochs",
        "30",
    )
    mlengine("jobs", "describe", job_id)
    mlengine("jobs", "list", "--limit", "5")
    metrics = json.loads((job_dir / "metrics.json").read_text())
    print(f"\nThe job exported its model to {job_dir / 'model'}:")
    for path in sorted((job_dir / "model").iterdir()):
        print(f"  {path.name}")
    print(f"Test accuracy: {metrics['accuracy']:.3f}")
    instances = job_dir / "instances.json"
    instances.write_text("[5.1, 3.5, 1.4, 0.2]\n[6.7, 3.0, 5.2, 2.3]\n")
    mlengine("models", "create", job_id, "--labels", "example=iris")
    mlengine("versions", "create", "v1", "--model", job_id, "--origin", str(job_dir / "model"))
    mlengine("predict", "--model", job_id, "--json-instances", str(instances))
    print("\nThe server keeps running in the background; stop it with: mlengine server stop")


if __name__ == "__main__":
    main()
