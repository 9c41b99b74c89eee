"""The ``mlengine`` command line: a thin shell over the SDK, mirroring ``gcloud ai-platform``.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import sys

import typer

from mlengine.cli import _config, _jobs, _local, _models, _predict, _preprocess, _server, _sql
from mlengine.errors import InvalidArgument, MLEngineError

__all__ = ["app", "main", "without_gcloud_flags"]

app = typer.Typer(
    name="mlengine",
    help="Self-hosted Google Cloud ML Engine: train, tune, register and serve models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_jobs.app, name="jobs")
app.add_typer(_local.app, name="local")
app.add_typer(_models.models_app, name="models")
app.add_typer(_models.versions_app, name="versions")
app.add_typer(_models.operations_app, name="operations")
app.command("predict")(_predict.predict)
app.command("explain")(_predict.explain)
_local.app.command("predict")(_predict.local_predict)
app.add_typer(_server.app, name="server")
app.add_typer(_config.app, name="config")
app.command("sql")(_sql.sql)
app.add_typer(_sql.datasets_app, name="datasets")
app.command("preprocess", context_settings=_preprocess.CONTEXT_SETTINGS)(_preprocess.preprocess)


@app.callback()
def _root(
    ctx: typer.Context,
    home: str = typer.Option(None, "--home", help="State directory (MLENGINE_HOME)."),
    api_url: str = typer.Option(None, "--api-url", help="API server (MLENGINE_API_URL)."),
    project: str = typer.Option(None, "--project", help="Project (MLENGINE_PROJECT)."),
) -> None:
    ctx.obj = {"home": home, "api_url": api_url, "project": project}


_VERBOSITIES = ("debug", "info", "warning", "error", "critical", "none")


def without_gcloud_flags(args: list[str]) -> list[str]:
    """`args` without gcloud's global ``--quiet``/``-q`` and ``--verbosity LEVEL``, which
    every gcloud command takes and mlengine accepts and ignores (it never prompts), so that
    gcloud command lines run unchanged. Arguments after ``--`` (a trainer's) are kept.

    Raises:
        InvalidArgument: a ``--verbosity`` that is not one of gcloud's levels.
    """
    kept: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            kept.append(arg)
            kept.extend(rest)
            break
        if arg in ("--quiet", "-q"):
            continue
        if arg == "--verbosity" or arg.startswith("--verbosity="):
            level = arg.partition("=")[2] if "=" in arg else next(rest, "")
            if level.lower() not in _VERBOSITIES:
                raise InvalidArgument(
                    f"--verbosity must be one of {', '.join(_VERBOSITIES)}; got {level!r}."
                )
            continue
        kept.append(arg)
    return kept


def main() -> None:
    """Run the CLI; mlengine errors and command-line mistakes (an unknown option, a value of
    the wrong type, a missing option) become one line on stderr and their exit code."""
    try:
        args = without_gcloud_flags(sys.argv[1:])
        result = app(args, standalone_mode=False, prog_name="mlengine")
    except MLEngineError as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"ERROR: {lines[0]}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as error:  # typer's click usage errors
        sys.exit(_usage_error(error))
    if isinstance(result, int) and not isinstance(result, bool):  # typer.Exit(code)
        sys.exit(result)


def _usage_error(error: typer.TyperException) -> int:
    """Print a usage error as one line (a group called without a command has shown its help
    already); its exit code."""
    context = getattr(error, "ctx", None)
    if type(error).__name__ != "NoArgsIsHelpError":
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        command = f" (see: {context.command_path} --help)" if context is not None else ""
        print(f"ERROR: {message}{command}", file=sys.stderr)
    code = getattr(error, "exit_code", 2)
    return code if isinstance(code, int) else 2
