"""``python -m mlengine`` runs the CLI."""

from __future__ import annotations

from mlengine.cli import main

if __name__ == "__main__":
    main()
