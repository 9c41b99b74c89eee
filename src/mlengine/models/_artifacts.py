"""Copying a version's origin into the artifact store, atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from mlengine.errors import InvalidArgument, StoreUnavailable
from mlengine.store._artifacts import filesystem_for

__all__ = ["copy_version_files", "is_local", "local_copy", "local_path"]

MAX_FILES = 1000


def is_local(url: str) -> bool:
    """Whether `url` is a path on this machine (no scheme, or ``file://``)."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    """The path of a local `url` (``file://`` removed, ``~`` expanded)."""
    return Path(url[len("file://") :] if url.startswith("file://") else url).expanduser()


def copy_version_files(origin: str, destination: str) -> str:
    """Copy the directory `origin` (path or fsspec URL) to `destination` (under the artifact
    root) through a temporary name, so a half-copied version is never visible. Returns the
    destination URL.

    Raises:
        InvalidArgument: the origin is missing, not a directory, empty or too large.
        StoreUnavailable: the store cannot be written.
    """
    source_fs, source_path = filesystem_for(origin)
    try:
        if not source_fs.isdir(source_path):
            raise InvalidArgument(f"The deploymentUri {origin} is not a directory.")
        files = [f for f in source_fs.find(source_path) if not source_fs.isdir(f)]
    except OSError as error:
        raise InvalidArgument(f"Cannot read the deploymentUri {origin}: {error}") from None
    if not files:
        raise InvalidArgument(f"The deploymentUri {origin} holds no files.")
    if len(files) > MAX_FILES:
        raise InvalidArgument(
            f"The deploymentUri {origin} holds {len(files)} files; at most {MAX_FILES} are allowed."
        )
    temporary = f"{destination.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if is_local(origin) and is_local(destination):
            shutil.copytree(local_path(origin), local_path(temporary))
            os.replace(local_path(temporary), local_path(destination))
        else:
            target_fs, target_path = filesystem_for(temporary)
            for file in files:
                relative = file[len(source_path.rstrip("/")) + 1 :]
                with (
                    source_fs.open(file, "rb") as reader,
                    target_fs.open(f"{target_path}/{relative}", "wb") as writer,
                ):
                    shutil.copyfileobj(reader, writer)
            target_fs.mv(target_path, filesystem_for(destination)[1], recursive=True)
    except OSError as error:
        raise StoreUnavailable(f"Cannot copy {origin} to {destination}: {error}") from error
    return destination


def local_copy(artifact_uri: str, cache_dir: Path) -> Path:
    """A local directory holding the version's files: the artifact itself when the store is
    local, else a download into `cache_dir` (reused when present)."""
    if is_local(artifact_uri):
        return local_path(artifact_uri)
    if (cache_dir / ".complete").exists():
        return cache_dir
    fs, path = filesystem_for(artifact_uri)
    temporary = cache_dir.with_name(f"{cache_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    fs.get(path.rstrip("/") + "/", str(temporary), recursive=True)
    (temporary / ".complete").touch()
    os.replace(temporary, cache_dir)
    return cache_dir
