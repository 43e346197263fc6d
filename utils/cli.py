"""What every entry point shares: `--config FILE --opts key=value ...`, and one-line user errors."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from utils.errors import UserError


def base_parser(description: str, config_required: bool = True) -> argparse.ArgumentParser:
    """`config_required=False`: the entry point can take the config from elsewhere (a checkpoint)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=config_required, help="experiment YAML file")
    parser.add_argument(
        "--opts", nargs="*", default=[], metavar="KEY=VALUE",
        help="overrides, values read as YAML, e.g. training.batch_size=4 training.shuffle=false",
    )
    return parser


def run_main(main: Callable[[Sequence[str] | None], None]) -> None:
    """Run `main`; a UserError ends the process with its one-line message and exit code 2."""
    try:
        main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
