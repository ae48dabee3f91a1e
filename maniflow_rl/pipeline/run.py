"""``maniflow-rl run``: scripted demos -> consistency-flow pretraining -> evaluation ->
PPO fine-tuning -> evaluation -> report, in one resumable run directory.

Run directory::

    config.yaml  command.txt  stages.json        the config used, the command, stage records
    demos.zarr/                                  scripted-expert demonstrations (DP3 layout)
    pretrain/checkpoints/latest.pt  pretrain/tb/ imitation training (resumes mid-stage);
    pretrain/checkpoints/best.pt     with pretrain.select_every_steps: the one evaluated/fine-tuned
    eval_pretrain.json                           imitation baseline (fixed eval seeds)
    finetune/latest.pt  finetune/metrics.jsonl   PPO or DSRL (resumes mid-stage)  finetune/tb/
    finetune/selection.json                      the policy kept (finetune.select: best
                                                 evaluation during RL, start included)
    eval_finetune.json  videos/                  that policy (same seeds, same count)
    eval_finetune_last.json                      the last checkpoint, when another one
    report.md  report.json  learning_curve.png   the run report

A stage whose record in ``stages.json`` says ``done`` is skipped when the command is re-run.
Every stage runs under the ``runtime`` thread policy (``utils/threads.py``; logged at start).

Under ``torchrun`` (``utils/distributed.py``) the fine-tuning stage runs data-parallel on every
rank; rank 0 alone runs the other stages (demos, imitation, evaluations, report) and writes the
run directory while the other ranks wait for it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Callable

from maniflow_rl.config import (DemosStageConfig, PretrainStageConfig,  # noqa: F401
                                RunConfig, config_to_yaml)
from maniflow_rl.utils.output_dir import check_output_dir
from maniflow_rl.utils.threads import thread_policy

log = logging.getLogger("maniflow_rl")

STAGES = ("demos", "pretrain", "eval_pretrain", "finetune", "eval_finetune", "report")
DATA_PARALLEL_STAGES = ("finetune",)   # every rank runs these; rank 0 alone the others


class StageRecords:
    """``stages.json``: one record per finished stage (wall-clock, env steps, outputs)."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.is_file() else {})

    def done(self, stage: str) -> bool:
        return bool(self.records.get(stage, {}).get("done"))

    def finish(self, stage: str, wall_s: float, **info: Any) -> None:
        previous = self.records.get(stage, {}).get("wall_s", 0.0)
        self.records[stage] = {"done": True, "wall_s": previous + wall_s, **info}
        self._write()

    def add_partial_time(self, stage: str, wall_s: float) -> None:
        record = self.records.setdefault(stage, {"done": False})
        record["wall_s"] = record.get("wall_s", 0.0) + wall_s
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=2))
        tmp.replace(self.path)


def run_pipeline(cfg: RunConfig, command: str = "", progress: bool = True,
                 stop_after: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; return the report dict."""
    from maniflow_rl.pipeline.finetune import check_data_parallel
    from maniflow_rl.utils import distributed as dp
    from maniflow_rl.utils.device import resolve_device

    cfg.validate()
    check_data_parallel(cfg.finetune_config())
    rank = dp.init_distributed(resolve_device(cfg.ppo.device))
    run_dir = check_output_dir(cfg.resolved_run_dir(), "run directory")
    if rank.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        if command:
            (run_dir / "command.txt").write_text(command + "\n")
    dp.wait_for_main()
    records = StageRecords(run_dir / "stages.json")
    with thread_policy(cfg.runtime.thread_policy(), local_world_size=rank.local_world_size):
        _run_stages(cfg, run_dir, records, rank, command, progress, stop_after)
    report_path = run_dir / "report.json"
    return json.loads(report_path.read_text()) if report_path.is_file() else records.records


def _run_stages(cfg: RunConfig, run_dir: Path, records: StageRecords, rank, command: str,
                progress: bool, stop_after: str | None) -> None:
    """The stages in order (module docstring): rank 0 alone, or every rank for the
    data-parallel ones; a stage recorded as done is skipped."""
    from maniflow_rl.utils import distributed as dp

    stage_fns: dict[str, Callable[[], dict[str, Any]]] = {
        "demos": lambda: _stage_demos(cfg, run_dir, progress),
        "pretrain": lambda: _stage_pretrain(cfg, run_dir, progress),
        "eval_pretrain": lambda: _stage_eval(cfg, run_dir, "pretrain", progress, records),
        "finetune": lambda: _stage_finetune(cfg, run_dir, progress),
        "eval_finetune": lambda: _stage_eval(cfg, run_dir, "finetune", progress, records),
        "report": lambda: _stage_report(cfg, run_dir, records, command),
    }
    for stage in STAGES:
        parallel = stage in DATA_PARALLEL_STAGES
        if parallel or rank.is_main:
            done = stage != "report" and records.done(stage)
            _run_stage(stage, stage_fns[stage], records, run_dir,
                       skip=dp.broadcast_object(done) if parallel else done,
                       record=rank.is_main)
        if not parallel:
            dp.wait_for_main()   # the other ranks wait for rank 0's stage
        if stage == stop_after:
            break


def _run_stage(stage: str, fn: Callable[[], dict[str, Any]], records: StageRecords,
               run_dir: Path, skip: bool, record: bool) -> None:
    """Run ``fn`` unless ``skip``; with ``record``, write its time and info to ``records``
    (also the partial time of a stage that fails)."""
    if skip:
        log.info("stage %-13s already done, reusing %s", stage, run_dir)
        return
    log.info("stage %-13s starting", stage)
    start = time.time()
    try:
        info = fn()
    except BaseException:
        if record:
            records.add_partial_time(stage, time.time() - start)
        raise
    if record:
        records.finish(stage, time.time() - start, **info)


# ---------------------------------------------------------------------------------- stages
def _stage_demos(cfg: RunConfig, run_dir: Path, progress: bool) -> dict[str, Any]:
    from maniflow_rl.data.demos import generate_demos

    env_kwargs = {k: v for k, v in cfg.env.env_kwargs().items() if k != "max_episode_steps"}
    summary = generate_demos(cfg.env.task, cfg.demos.episodes, run_dir / "demos.zarr",
                             seed=cfg.demos.seed, max_episode_steps=cfg.env.max_episode_steps,
                             env_kwargs=env_kwargs, progress=progress,
                             overwrite=True, action_noise=cfg.demos.action_noise)
    return {"env_steps": int(summary["total_steps"]),
            "summary": _jsonable(summary)}


def _stage_pretrain(cfg: RunConfig, run_dir: Path, progress: bool) -> dict[str, Any]:
    from maniflow_rl.config.sections import split_policy_obs
    from maniflow_rl.data.dataset import key_map_for
    from maniflow_rl.envs.robosuite.tasks import is_robosuite_task
    from maniflow_rl.train.pretrain import PretrainConfig, run_pretraining

    stage = cfg.pretrain
    obs_keys, policy_fields = split_policy_obs(cfg.policy, cfg.env.task)
    pcfg = PretrainConfig(dataset_path=str(run_dir / "demos.zarr"),
                          obs_keys=obs_keys, key_map=key_map_for(obs_keys),
                          output_dir=str(run_dir / "pretrain"), task=cfg.env.task,
                          # robosuite: the specification's xyz + rgb points; MetaWorld: xyz (DP3)
                          point_cloud_channels=None if is_robosuite_task(cfg.env.task) else 3,
                          num_epochs=stage.num_epochs, batch_size=stage.batch_size, lr=stage.lr,
                          warmup_steps=stage.warmup_steps,
                          checkpoint_every_epochs=stage.checkpoint_every_epochs,
                          max_train_steps=stage.max_train_steps, ema_decay=stage.ema_decay,
                          seed=stage.seed, device=cfg.ppo.device, policy_config=policy_fields,
                          env_kwargs=cfg.env.env_kwargs(), eval_every_epochs=0,
                          select_every_steps=stage.select_every_steps,
                          select_episodes=stage.select_episodes,
                          select_policy_overrides=dict(cfg.finetune_policy),
                          keep_epoch_checkpoints=stage.keep_epoch_checkpoints,
                          eval_num_envs=cfg.eval.num_envs)
    summary = run_pretraining(pcfg, progress=progress)
    env_steps = sum(int(r.get("num_env_steps", 0)) for r in summary["selection"])
    return {"env_steps": env_steps, "summary": _jsonable(summary)}


def pretrain_checkpoint(run_dir: Path) -> Path:
    """The imitation policy the run evaluates and fine-tunes: ``best.pt`` (selected on
    validation seeds) when pretraining selected one, else the last checkpoint."""
    checkpoints = run_dir / "pretrain" / "checkpoints"
    best = checkpoints / "best.pt"
    return best if best.exists() else checkpoints / "latest.pt"


def _stage_eval(cfg: RunConfig, run_dir: Path, which: str, progress: bool,
                records: StageRecords) -> dict[str, Any]:
    """``eval_pretrain``: the imitation checkpoint. ``eval_finetune``: the policy
    ``finetune.select`` chose (``finetune_selection.py``), and beside it the last checkpoint
    (``eval_finetune_last.json``) when that is another one."""
    if which == "pretrain":
        checkpoint, selection = pretrain_checkpoint(run_dir), None
    else:
        from maniflow_rl.pipeline.finetune_selection import select_finetuned_checkpoint
        from maniflow_rl.rl.checkpoint_names import LATEST_CHECKPOINT

        selection = select_finetuned_checkpoint(
            run_dir / "finetune", cfg.finetune.algorithm, pretrain_checkpoint(run_dir),
            records.records["finetune"]["env_steps"], cfg.eval.rl_seed, cfg.finetune.select)
        checkpoint = Path(selection["checkpoint"])
        log.info("evaluating %s (finetune.select=%s: env step %s)", checkpoint,
                 cfg.finetune.select, selection["global_step"])
    video = run_dir / "videos" / f"{which}.mp4" if cfg.eval.video_episodes > 0 else None
    result = {**evaluate_checkpoint(cfg, checkpoint, video, progress),
              "checkpoint": str(checkpoint.relative_to(run_dir))}
    env_steps = int(result["num_env_steps"])
    if selection is not None:
        result["selection"] = {**{k: v for k, v in selection.items() if k != "candidates"},
                               "num_candidates": len(selection["candidates"])}
        last = run_dir / "finetune" / LATEST_CHECKPOINT
        last_file = run_dir / "eval_finetune_last.json"
        last_file.unlink(missing_ok=True)   # an earlier pass's, if the selection changed
        if not selection["is_last"]:
            last_result = {**evaluate_checkpoint(cfg, last, None, progress),
                           "checkpoint": str(last.relative_to(run_dir))}
            last_file.write_text(json.dumps(last_result, indent=2))
            env_steps += int(last_result["num_env_steps"])
    (run_dir / f"eval_{which}.json").write_text(json.dumps(result, indent=2))
    return {"env_steps": env_steps, "success_rate": result["success_rate"]}


def evaluate_checkpoint(cfg: RunConfig, checkpoint: Path, video: Path | None = None,
                        progress: bool = False) -> dict[str, Any]:
    """The run's evaluation (``eval`` section: episodes, seeds, envs; ``finetune_policy``
    sampling) of an imitation, PPO or DSRL checkpoint; JSON-ready."""
    from maniflow_rl.envs.vector.runner import PointCloudEnvRunner
    from maniflow_rl.envs.metaworld.env import privileged_state_for
    from maniflow_rl.evaluation.evaluate import evaluate_policy
    from maniflow_rl.pipeline.finetune import policy_from_checkpoint
    from maniflow_rl.utils.checkpoint import load_checkpoint_file

    payload = load_checkpoint_file(checkpoint, expected_kind=("pretrain", "ppo", "dsrl"))
    # before and after RL the policy samples with the same settings (finetune_policy)
    if payload["kind"] == "dsrl":
        from maniflow_rl.rl.dsrl.steered_policy import steered_policy_from_checkpoint

        policy = steered_policy_from_checkpoint(payload)
    else:
        policy = policy_from_checkpoint(payload, cfg.finetune_policy)
    with PointCloudEnvRunner(cfg.env.task, num_envs=cfg.eval.num_envs, seed=cfg.eval.seed,
                             num_workers=cfg.env.num_workers, **cfg.env.runner_kwargs(),
                             **cfg.env.env_kwargs(),
                             privileged_state=privileged_state_for(policy.shape_meta)) as runner:
        result = evaluate_policy(policy, runner, cfg.eval.episodes, seed=cfg.eval.seed,
                                 video_path=video, num_video_episodes=cfg.eval.video_episodes,
                                 progress=progress)
    return _jsonable(result)


def _stage_finetune(cfg: RunConfig, run_dir: Path, progress: bool) -> dict[str, Any]:
    from maniflow_rl.pipeline.finetune import (before_first_update, build_finetune_trainer,
                                               close_trainer_envs)

    finetune_cfg = cfg.finetune_config()
    trainer = build_finetune_trainer(finetune_cfg, pretrain_checkpoint(run_dir),
                                     run_dir / "finetune")
    try:
        before_first_update(trainer, cfg.finetune.algorithm, finetune_cfg.demos,
                            run_dir / "finetune")
        trainer.train(progress=progress)
        trainer.save_checkpoint()
    finally:
        close_trainer_envs(trainer)
    steps = getattr(trainer, "iteration", getattr(trainer, "vector_steps", 0))
    return {"env_steps": int(trainer.global_step), "iterations": int(steps),
            "executed_env_steps": int(getattr(trainer, "executed_env_steps", trainer.global_step)),
            "algorithm": cfg.finetune.algorithm}


def _stage_report(cfg: RunConfig, run_dir: Path, records: StageRecords,
                  command: str) -> dict[str, Any]:
    from maniflow_rl.pipeline.report import write_report

    report = write_report(run_dir, records.records, config=dataclasses.asdict(cfg),
                          command=command, machine=machine_description())
    return {"env_steps": 0, "success_gain": report["success_gain"]}


def machine_description() -> str:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {os.cpu_count()} cores, {_memory_gb():.0f} GB RAM, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads in the main process)")


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 1024**2
    except OSError:
        return float("nan")


def _jsonable(value: Any) -> Any:
    """Numbers / strings / lists / dicts only (numpy scalars become Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
