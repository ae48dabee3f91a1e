"""Registry of the 50 MetaWorld v3 tasks and the DP3 difficulty groups (pure data, no imports of
metaworld, so it can be used by the CLI and configs without the simulator installed).

Accepted spellings of a task: ``metaworld/pick-place-v3``, ``pick-place-v3``, ``pick-place``
(case-insensitive, ``_`` and ``-`` interchangeable).
"""

from __future__ import annotations

import difflib

REWARD_TYPES = ("sparse", "dense", "shaped")   # MetaWorldPointCloudEnv reward_type

__all__ = [
    "METAWORLD_V3_TASKS",
    "DP3_DIFFICULTY",
    "TASKS_BY_DIFFICULTY",
    "resolve_task",
    "registry_name",
    "task_difficulty",
    "list_tasks",
]

PREFIX = "metaworld/"

# The 50 environments of metaworld.env_dict.ALL_V3_ENVIRONMENTS (metaworld 3.x), in its order.
METAWORLD_V3_TASKS: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3",
    "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-v3",
    "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3", "coffee-push-v3",
    "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
    "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3", "faucet-open-v3",
    "faucet-close-v3", "hammer-v3", "handle-press-side-v3", "handle-press-v3",
    "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3", "pick-place-wall-v3",
    "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3",
    "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3",
    "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-v3",
    "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3",
    "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)

# DP3 (Ze et al., 2024) reports MetaWorld by difficulty group, using the grouping of Seo et al.,
# "Masked World Models for Visual Control" (2022): 28 easy, 11 medium, 6 hard, 5 very hard.
# Reproduced from memory of those papers' appendices (the counts match; the membership of a few
# borderline tasks, e.g. peg-unplug-side, should be checked against the DP3 paper if it matters).
TASKS_BY_DIFFICULTY: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3",
        "button-press-wall-v3", "coffee-button-v3", "dial-turn-v3", "door-close-v3",
        "door-lock-v3", "door-open-v3", "door-unlock-v3", "drawer-close-v3", "drawer-open-v3",
        "faucet-close-v3", "faucet-open-v3", "handle-press-v3", "handle-press-side-v3",
        "handle-pull-v3", "handle-pull-side-v3", "lever-pull-v3", "plate-slide-v3",
        "plate-slide-back-v3", "plate-slide-back-side-v3", "plate-slide-side-v3", "reach-v3",
        "reach-wall-v3", "window-close-v3", "window-open-v3", "peg-unplug-side-v3",
    ),
    "medium": (
        "basketball-v3", "bin-picking-v3", "box-close-v3", "coffee-pull-v3", "coffee-push-v3",
        "hammer-v3", "peg-insert-side-v3", "push-wall-v3", "soccer-v3", "sweep-v3",
        "sweep-into-v3",
    ),
    "hard": (
        "assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3",
        "push-back-v3",
    ),
    "very_hard": (
        "shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3",
        "pick-place-wall-v3",
    ),
}

DP3_DIFFICULTY: dict[str, str] = {t: g for g, ts in TASKS_BY_DIFFICULTY.items() for t in ts}

assert len(METAWORLD_V3_TASKS) == 50 and set(DP3_DIFFICULTY) == set(METAWORLD_V3_TASKS)


def _normalize(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key.startswith(PREFIX):
        key = key[len(PREFIX):]
    if not key.endswith("-v3"):
        key = key + "-v3"
    return key


def resolve_task(name: str) -> str:
    """Canonical MetaWorld env name (e.g. ``"pick-place-v3"``) of any accepted spelling.

    Raises:
        ValueError: unknown task, with the closest task names as suggestions.
    """
    if not isinstance(name, str):
        raise TypeError(f"task name must be a string, got {type(name).__name__}")
    key = _normalize(name)
    if key in DP3_DIFFICULTY:
        return key
    close = difflib.get_close_matches(key, METAWORLD_V3_TASKS, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(PREFIX + c for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown MetaWorld task {name!r}.{hint} "
        f"Use 'metaworld/<task>-v3'; see maniflow_rl.envs.metaworld.list_tasks()."
    )


def registry_name(name: str) -> str:
    """``metaworld/<task>-v3`` form of any accepted spelling."""
    return PREFIX + resolve_task(name)


def task_difficulty(name: str) -> str:
    """DP3 difficulty group: ``easy`` / ``medium`` / ``hard`` / ``very_hard``."""
    return DP3_DIFFICULTY[resolve_task(name)]


def list_tasks(difficulty: str | None = None) -> list[str]:
    """Registry names ``metaworld/<task>-v3``, optionally of one DP3 difficulty group."""
    if difficulty is None:
        return [PREFIX + t for t in METAWORLD_V3_TASKS]
    if difficulty not in TASKS_BY_DIFFICULTY:
        raise ValueError(f"difficulty must be one of {sorted(TASKS_BY_DIFFICULTY)}, "
                         f"got {difficulty!r}")
    return [PREFIX + t for t in TASKS_BY_DIFFICULTY[difficulty]]
