"""The bad inputs of ``bench_fault_injection.py``: each is a ``maniflow-rl`` command line that
must fail before any work with one error line, rc != 0 and no traceback.

``bad_input_cases(work)`` builds them inside ``work`` (files, a read-only folder, datasets) and
returns ``(name, argv, env_overrides)`` tuples; ``{ro}`` in an argument is the read-only folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RUN = ["run", "--no-progress"]
FT = ["finetune", "--no-progress"]


def write_dataset(path: Path, cloud_shape: tuple) -> Path:
    """A two-episode DP3-layout zarr with point clouds of per-step shape ``cloud_shape``."""
    from maniflow_rl.data import ReplayBuffer

    buffer = ReplayBuffer.create_empty()
    rng = np.random.default_rng(0)
    for _ in range(2):
        buffer.add_episode({"point_cloud": rng.normal(size=(12, *cloud_shape)).astype("f4"),
                            "state": rng.normal(size=(12, 3)).astype("f4"),
                            "action": rng.uniform(-1, 1, (12, 2)).astype("f4")})
    return Path(buffer.save_to_path(path))


def prepare_files(work: Path) -> dict[str, Path]:
    """The files the cases point at: a user file, YAML files, datasets, a non-checkpoint."""
    files = {"file": work / "user_file.txt", "bad_yaml": work / "bad.yaml",
             "list_yaml": work / "list.yaml", "not_ckpt": work / "not_a_checkpoint.pt",
             "user_dir": work / "user_dir"}
    files["file"].write_text("the user's data\n")
    files["bad_yaml"].write_text("ppo:\n  num_envs: [1, 2\n")
    files["list_yaml"].write_text("- a\n- b\n")
    files["not_ckpt"].write_text("not a torch file")
    files["user_dir"].mkdir(exist_ok=True)
    (files["user_dir"] / "notes.txt").write_text("keep me\n")
    files["flat_zarr"] = write_dataset(work / "flat.zarr", (3,))
    files["good_zarr"] = write_dataset(work / "good.zarr", (16, 3))
    return files


def bad_input_cases(work: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """Every case: name, argv (after ``maniflow-rl``), extra environment variables."""
    f = {k: str(v) for k, v in prepare_files(work).items()}
    out = str(work / "out")
    below = f["file"] + "/sub"
    cases = [
        ("yaml syntax error", [*RUN, "--config", f["bad_yaml"], "--out", out]),
        ("yaml not a mapping", [*RUN, "--config", f["list_yaml"], "--out", out]),
        ("missing --config file", [*RUN, "--config", str(work / "nope.yaml"), "--out", out]),
        ("run --out is a file", [*RUN, "--out", f["file"]]),
        ("run --out below a file", [*RUN, "--out", below]),
        ("run --out read-only", [*RUN, "--out", "{ro}/run"]),
        ("finetune --out is a file", [*FT, "--checkpoint", f["not_ckpt"], "--out", f["file"]]),
        ("finetune --out read-only", [*FT, "--checkpoint", f["not_ckpt"], "--out", "{ro}/ft"]),
        ("demos --out is a file", ["demos", "--task", "reach-v3", "--out", f["file"]]),
        ("demos --out below a file", ["demos", "--task", "reach-v3", "--out", below]),
        ("demos --out read-only", ["demos", "--task", "reach-v3", "--out", "{ro}/d.zarr"]),
        ("demos --out a user folder", ["demos", "--task", "reach-v3", "--out", f["user_dir"]]),
        ("pretrain --out is a file", ["pretrain", "--dataset", f["good_zarr"], "--out",
                                      f["file"]]),
        ("dummy --out is a file", ["dummy", "--out", f["file"]]),
        ("run policy typo", [*RUN, "--out", out, "policy.horizn=8"]),
        ("run finetune_policy typo", [*RUN, "--out", out, "finetune_policy.noise_levl=1"]),
        ("run finetune_policy fixed key", [*RUN, "--out", out, "finetune_policy.horizon=8"]),
        ("run ppo typo", [*RUN, "--out", out, "ppo.learning_rat=1"]),
        ("run unknown section", [*RUN, "--out", out, "optimizer.lr=1"]),
        ("run override without =", [*RUN, "--out", out, "ppo.num_envs"]),
        ("run wrong type", [*RUN, "--out", out, "ppo.num_envs=abc"]),
        ("run unknown task", [*RUN, "--out", out, "--task", "metaworld/pick-plaice"]),
        ("run point_cloud_source=lidar", [*RUN, "--out", out, "env.point_cloud_source=lidar"]),
        ("run num_points=0", [*RUN, "--out", out, "env.num_points=0"]),
        ("run max_episode_steps=0", [*RUN, "--out", out, "env.max_episode_steps=0"]),
        ("run reward_type", [*RUN, "--out", out, "env.reward_type=shaped"]),
        ("run pretrain.num_epochs=0", [*RUN, "--out", out, "pretrain.num_epochs=0"]),
        ("run pretrain.lr=0", [*RUN, "--out", out, "pretrain.lr=0"]),
        ("run demos.episodes=0", [*RUN, "--out", out, "demos.episodes=0"]),
        ("run eval.episodes=0", [*RUN, "--out", out, "eval.episodes=0"]),
        ("run batch_size not dividing", [*RUN, "--out", out, "ppo.batch_size=7"]),
        ("run finetune.algorithm", [*RUN, "--out", out, "finetune.algorithm=sac"]),
        ("run advantage_type", [*RUN, "--out", out, "advantage.advantage_type=foo"]),
        ("run dsrl.variant", [*RUN, "--out", out, "dsrl.variant=xyz"]),
        ("run overrides among options", [*RUN, "ppo.num_envs=2", "--out", out,
                                         "ppo.batch_size=7"]),
        ("finetune missing checkpoint", [*FT, "--checkpoint", str(work / "nope.pt"), "--out",
                                         out]),
        ("finetune not a checkpoint", [*FT, "--checkpoint", f["not_ckpt"], "--out", out]),
        ("finetune lidar", [*FT, "--checkpoint", f["not_ckpt"], "--out", out,
                            "env.point_cloud_source=lidar"]),
        ("eval missing checkpoint", ["eval", "--checkpoint", str(work / "nope.pt")]),
        ("eval override group", ["eval", "--checkpoint", f["not_ckpt"], "ppo.seed=1"]),
        ("pretrain missing dataset", ["pretrain", "--dataset", str(work / "no.zarr"), "--out",
                                      out]),
        ("pretrain rank-2 point cloud", ["pretrain", "--dataset", f["flat_zarr"], "--out", out,
                                         "--no-progress"]),
        ("pretrain policy typo", ["pretrain", "--dataset", f["good_zarr"], "--out", out,
                                  "policy.horizn=8"]),
        ("pretrain unknown option", ["pretrain", "--dataset", f["good_zarr"], "--out", out,
                                     "epochz=3"]),
        ("demos unknown task", ["demos", "--task", "metaworld/no-such-task", "--out", out]),
        ("demos --episodes 0", ["demos", "--task", "reach-v3", "--episodes", "0", "--out", out]),
        ("dummy --iterations 0", ["dummy", "--iterations", "0", "--out", out]),
        ("dummy --iterations -3", ["dummy", "--iterations", "-3", "--out", out]),
        ("dummy ppo typo", ["dummy", "--out", out, "ppo.batch_sz=4"]),
        ("dummy policy typo", ["dummy", "--out", out, "policy.horizn=4"]),
    ]
    return [(name, argv, {}) for name, argv in cases]
