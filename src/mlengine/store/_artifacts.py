"""The artifact store: any fsspec filesystem, local by default. Writes are atomic."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import fsspec

from mlengine.errors import MissingDependency, NotFound, StoreUnavailable

__all__ = ["ArtifactStore"]

_EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3"}


def filesystem_for(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and in-filesystem path of `url` (a local path or fsspec URL).

    Raises:
        MissingDependency: the URL's protocol needs an extra that is not installed.
    """
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        protocol = url.split("://", 1)[0]
        extra = _EXTRAS.get(protocol)
        hint = f" Install it with: pip install 'mlengine[{extra}]'" if extra else ""
        raise MissingDependency(f"Cannot open {url}: {error}.{hint}") from error
    return fs, path


class ArtifactStore:
    """Files under one root URL (``/path``, ``file://``, ``gs://b/p``, ``memory://x``).

    `put_file` writes to a temporary name and renames it into place, so readers never see a
    half-written artifact.
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def url(self, relative: str) -> str:
        """The URL of `relative` under the root."""
        return f"{self.root}/{relative.lstrip('/')}"

    def put_file(self, local_path: Path, relative: str) -> str:
        """Copy a local file into the store at `relative` and return its URL.

        Raises:
            StoreUnavailable: the store cannot be written.
        """
        target = self.url(relative)
        fs, path = filesystem_for(target)
        parent = path.rsplit("/", 1)[0]
        temporary = f"{parent}/.{uuid.uuid4().hex}.tmp"
        try:
            fs.makedirs(parent, exist_ok=True)
            fs.put_file(str(local_path), temporary)
            if fs.protocol in ("file", "local") or "file" in fs.protocol:
                os.replace(temporary, path)
            else:
                fs.mv(temporary, path)
        except OSError as error:
            raise StoreUnavailable(f"Cannot write {target}: {error}") from error
        return target

    def put_bytes(self, data: bytes, relative: str) -> str:
        """Write `data` at `relative` atomically and return its URL."""
        import tempfile

        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(data)
        try:
            return self.put_file(Path(handle.name), relative)
        finally:
            os.unlink(handle.name)


def fetch_file(url: str, local_path: Path) -> Path:
    """Copy the file at `url` (local path or fsspec URL) to `local_path`.

    Raises:
        NotFound: nothing is at `url`.
        StoreUnavailable: the store cannot be read.
    """
    fs, path = filesystem_for(url)
    try:
        if not fs.exists(path):
            raise NotFound(f"No file at {url}.")
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(local_path))
    except NotFound:
        raise
    except OSError as error:
        raise StoreUnavailable(f"Cannot read {url}: {error}") from error
    return local_path
