"""``maniflow-rl`` console script.

Subcommands::

    maniflow-rl run       demos -> pretrain -> eval -> PPO fine-tune -> eval -> report (resumable)
    maniflow-rl demos     scripted MetaWorld demonstrations -> DP3/ManiFlow zarr
    maniflow-rl pretrain  consistency-flow imitation training on a zarr dataset
    maniflow-rl finetune  PPO fine-tuning of a pretrained checkpoint in MetaWorld
    maniflow-rl eval      success rate (with confidence interval) and videos of a checkpoint
    maniflow-rl dummy     PPO on the synthetic ManiFlowDummyEnvRunner (smoke test of the stack)
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

# (module, add-parser function, run function) of every subcommand, imported lazily.
SUBCOMMANDS = {
    "run": ("maniflow_rl.cli.run_cmd", "add_run_parser", "run_run"),
    "demos": ("maniflow_rl.cli.demos_cmd", "add_demos_parser", "run_demos"),
    "pretrain": ("maniflow_rl.cli.pretrain_cmd", "add_pretrain_parser", "run_pretrain"),
    "finetune": ("maniflow_rl.cli.finetune_cmd", "add_finetune_parser", "run_finetune"),
    "eval": ("maniflow_rl.cli.eval_cmd", "add_eval_parser", "run_eval"),
    "dummy": ("maniflow_rl.cli.finetune_cmd", "add_dummy_parser", "run_dummy"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maniflow-rl", description="PPO fine-tuning of ManiFlow point-cloud flow policies.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, add_name, run_name in SUBCOMMANDS.values():
        module = import_module(module_name)
        sub = getattr(module, add_name)(subparsers)  # every add-parser returns its parser
        sub.set_defaults(_run=getattr(module, run_name))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        if args.verbose:
            raise  # full traceback with -v
        print(f"maniflow-rl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
