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
        sub.set_defaults(_run=getattr(module, run_name), _parser=sub)
    return parser


def is_override(token: str) -> bool:
    """``key=value`` (``ppo.num_envs=2``, ``policy.noise_params=[1,2]``), not an option."""
    key, sep, _ = token.partition("=")
    return bool(sep) and bool(key) and not token.startswith("-")


def merge_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    extras: list[str]) -> argparse.Namespace:
    """``key=value`` tokens argparse left over (they came after an option) join
    ``args.overrides``, so overrides may sit anywhere among the options, as with Hydra; any
    other leftover is argparse's usual "unrecognized arguments" error."""
    overrides = [t for t in extras if is_override(t)]
    rest = [t for t in extras if not is_override(t)]
    if overrides and not hasattr(args, "overrides"):
        rest = extras
    if rest:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(rest)}")
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    return args


def error_line(exc: BaseException) -> str:
    """The one line printed for an expected failure (no traceback without ``-v``)."""
    from maniflow_rl.utils.output_dir import describe_os_error, is_no_space_error

    if isinstance(exc, OSError) or is_no_space_error(exc):
        return describe_os_error(exc)
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


EXPECTED_ERRORS = (ValueError, OSError, RuntimeError)   # FileNotFoundError etc. are OSErrors


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; ``key=value`` overrides may sit anywhere among the options."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    args = merge_overrides(parser, args, extras)
    args._top_parser = parser
    return args


def main(argv: list[str] | None = None) -> int:
    from maniflow_rl.utils.distributed import shutdown_distributed

    args = parse_command_line(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "_run", None):
        args._top_parser.print_help()
        return 2
    try:
        result = args._run(args)
        shutdown_distributed()   # torchrun: all ranks leave together
    except EXPECTED_ERRORS as exc:
        if args.verbose:
            raise  # full traceback with -v
        print(f"maniflow-rl {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
