"""Extract and cache frontend features of a trained Sign2Gloss model: `python extract_feature.py --config FILE`.

Feature caching serves Sign2Text training on sign-language tasks. The tasks this toolkit has so far
(lip reading) train end to end from video, so this entry point checks the config and says so.
"""
from __future__ import annotations

from typing import Sequence

from utils.cli import base_parser, run_main
from utils.config import load_config
from utils.errors import UserError

TASKS_WITH_FEATURES: tuple[str, ...] = ()


def main(argv: Sequence[str] | None = None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(args.config, args.opts)
    if cfg["task"] not in TASKS_WITH_FEATURES:
        raise UserError(f"{args.config}: task {cfg['task']!r} has no feature cache; feature extraction "
                        f"applies to Sign2Gloss models")


if __name__ == "__main__":
    run_main(main)
