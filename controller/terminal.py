"""What every ``trimtab`` command prints with: the two consoles and the ``-o`` output format."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["Output", "OutputFormat", "err", "out"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(StrEnum):
    text = "text"
    json = "json"


OutputFormat = Annotated[Output, typer.Option("-o", "--output", help="text or json")]
