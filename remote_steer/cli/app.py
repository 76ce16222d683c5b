"""The ``remote-steer`` application: plain ``--help``, one-line errors (exit 2)."""

from __future__ import annotations

import functools
import os

import typer
import typer.core

# The command's own display draws every progress bar: none from the libraries below
# (huggingface_hub downloads, transformers' loading; tqdm reads TQDM_DISABLE when it is
# first imported, which is after this). A user's own setting wins.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from remote_steer.errors import RemoteSteerError


def _metavar(param) -> str:
    """``<list[float]>`` → ``FLOAT``, ``<int range>`` → ``INT``, ``<str>`` → ``TEXT``."""
    import re

    try:
        shown = str(param.display_type(None) or "")
    except Exception:  # a type typer cannot describe without a context: a neutral name
        return "VALUE"
    inner = re.sub(r"^<|>$", "", shown)
    inner = re.sub(r"^list\[(.*)\]$", r"\1", inner).replace(" range", "")
    return {"str": "TEXT", "": "VALUE"}.get(inner, inner).upper()


def _no_type(ctx) -> None:
    """Rich help's type column, left empty: the metavar already says what to give."""
    return None


class PlainHelpCommand(typer.core.TyperCommand):
    """``--help`` in plain click style: ``SPEC``, not typer's ``{spec}`` and ``spec <path>``;
    ``--strength FLOAT``, not ``<list[float]>``; a repeatable option says "repeat"."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.argument_usage: dict[str, str] = {}  # argument name -> its name on the usage line
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                name = (param.metavar or param.name or "").upper()
                usage = name if param.required else f"[{name}]"
                dots = "..." if param.nargs != 1 else ""
                param.metavar = name + dots
                self.argument_usage[param.name or ""] = usage + dots
                param.display_type_rich = _no_type  # type: ignore[method-assign]
            elif isinstance(param, typer.core.TyperOption) and not (param.is_flag or param.count):
                if param.metavar is None:
                    param.metavar = _metavar(param)
                if getattr(param, "multiple", False) and "repeat" not in (param.help or "").lower():
                    param.help = f"{param.help or ''} Repeat for several.".strip()

    def collect_usage_pieces(self, ctx) -> list[str]:
        """The usage line, arguments by their plain names (click's hook, not typer's)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            plain = self.argument_usage.get(param.name or "")
            pieces += [plain] if plain is not None else param.get_usage_pieces(ctx)
        return pieces


app = typer.Typer(
    help="Contrastive Activation Addition steering sweeps on open models, locally or on NDIF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(error: Exception) -> None:
    """One line on stderr, exit 2. A stray ``OSError`` (a read-only or full disk) says
    its path and reason rather than a traceback."""
    if isinstance(error, OSError) and not isinstance(error, RemoteSteerError):
        from remote_steer.errors import filesystem_error

        if error.filename is not None:
            error = filesystem_error(error, "write")
        else:
            error = RemoteSteerError(f"{type(error).__name__}: {error}")
    typer.echo(f"error: {' '.join(str(error).split())}", err=True)
    raise typer.Exit(code=2)


def command(name: str | None = None, *, short_help: str):
    """Register a command on ``app``: plain ``--help``, and a ``RemoteSteerError`` or
    ``OSError`` it raises becomes one line on stderr, exit 2 (``fail``)."""

    def register(function):
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except (RemoteSteerError, OSError) as error:
                fail(error)

        return app.command(name, cls=PlainHelpCommand, short_help=short_help)(guarded)

    return register
