"""Typed configs from YAML presets and ``key=value`` overrides through OmegaConf, so a typo is
an error, not a silent no-op; every failure is a one-line ``ValueError`` /
``FileNotFoundError``.

    load_config(RunConfig, ["default", "my.yaml"], ["ppo.learning_rate=3e-5"])
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# the YAML presets shipped with the package (maniflow_rl/configs/*.yaml)
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_preset(name_or_path: str | None) -> Path | None:
    """A YAML path, or the name of a preset shipped in ``maniflow_rl/configs`` (task name)."""
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = name_or_path.split("/")[-1].removesuffix(".yaml")
    for candidate in (PRESET_DIR / f"{name_or_path.replace('/', '-')}.yaml",   # robosuite-lift
                      PRESET_DIR / f"{stem}.yaml", PRESET_DIR / f"{stem.removesuffix('-v3')}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor a preset; presets: "
                            f"{available}")


def load_yaml_mapping(path: Path) -> DictConfig:
    """``OmegaConf.load(path)`` with a one-line ``ValueError`` for a YAML syntax error (line and
    column) or a file whose top level is not a mapping."""
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config {path}: YAML syntax error{where}: {problem}") from exc
    if not isinstance(loaded, DictConfig):
        raise ValueError(f"config {path}: expected a mapping of sections (env:, ppo:, ...), "
                         f"got a {type(loaded).__name__}")
    return loaded


def check_override_syntax(overrides: list[str] | None) -> list[str]:
    """The overrides as a list; ``ValueError`` for any item that is not ``key=value``."""
    items = list(overrides or [])
    bad = [o for o in items if "=" not in o or o.startswith("=")]
    if bad:
        raise ValueError(f"overrides must look like key=value, got {bad}")
    return items


def load_config(cls, preset: str | Path | list | tuple | None = None,
                overrides: list[str] | None = None):
    """``cls`` defaults <- YAML preset(s), in order <- ``key=value`` overrides; returns a ``cls``.

    ``preset`` may be a list: later presets override earlier ones (a task preset holds only what
    differs from ``default.yaml``)."""
    cfg = OmegaConf.structured(cls)
    presets = [] if preset is None else list(preset) if isinstance(preset, (list, tuple)) \
        else [preset]
    items = check_override_syntax(overrides)
    for item in presets:
        path = resolve_preset(str(item))
        try:
            cfg = OmegaConf.merge(cfg, load_yaml_mapping(path))
        except OmegaConfBaseException as exc:
            raise ValueError(f"bad config {path}: {_first_line(exc)}") from exc
    try:
        if items:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(items))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ValueError(f"bad config: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    """OmegaConf's message without its multi-line ``full_key: ... object_type=...`` trailer."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    key = getattr(exc, "full_key", None)
    head = lines[0] if lines else type(exc).__name__
    return f"{head} (key: {key})" if key and key not in head else head


def config_to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
