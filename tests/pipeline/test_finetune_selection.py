"""Which fine-tuned policy a run keeps (``pipeline/finetune_selection.py``): the best
evaluation during RL with the starting policy as a candidate, on layouts of their own; every
evaluated policy is checkpointed by both trainers."""

from __future__ import annotations

import json

import pytest

from maniflow_rl.config import EvalConfig, RunConfig
from maniflow_rl.pipeline.finetune_selection import SELECTION_FILE, select_finetuned_checkpoint


SEED = 300_000   # eval.rl_seed


def _write_run(folder, reference, evals, missing=(), algorithm="ppo", seeds=None):
    """A finetune folder: the reference evaluation, one metrics row per evaluation (and a log
    row without one between them) and the checkpoints of the evaluated steps; ``seeds``: the
    layout seed recorded per evaluation (default: all ``SEED``; None = not recorded)."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [SEED] * (len(evals) + 1) if seeds is None else seeds
    if reference is not None:
        (folder / "eval_reference.json").write_text(json.dumps(
            {"success_rate": reference, "layout_seed": seeds[0]}))
    rows = []
    for index, success in enumerate(evals, start=1):
        rows.append({"iteration": 2 * index - 1, "vector_step": 2 * index - 1,
                     "global_step": 100 * (2 * index - 1)})
        rows.append({"iteration": 2 * index, "vector_step": 2 * index,
                     "global_step": 200 * index, "eval/success_rate": success,
                     "eval/layout_seed": seeds[index]})
        name = f"dsrl_{2 * index}.pt" if algorithm == "dsrl" else f"checkpoint_{2 * index}.pt"
        if index not in missing:
            (folder / name).write_bytes(b"x")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "latest.pt").write_bytes(b"x")
    return folder


def test_the_start_is_kept_when_no_evaluation_during_rl_beats_it(tmp_path):
    start = tmp_path / "pretrain" / "best.pt"
    # 0.40 at steps 200 and 600 tie the start: no evidence that RL helped, the start stays
    folder = _write_run(tmp_path / "tie", 0.40, [0.40, 0.30, 0.40, 0.35])
    chosen = select_finetuned_checkpoint(folder, "ppo", start, final_step=800, layout_seed=SEED)
    assert chosen["checkpoint"] == str(start) and chosen["is_start"]
    # 0.45 at steps 200 and 600 beat it: the later of the tied checkpoints is kept
    folder = _write_run(tmp_path / "finetune", 0.40, [0.45, 0.30, 0.45, 0.35])
    chosen = select_finetuned_checkpoint(folder, "ppo", start, final_step=800, layout_seed=SEED)
    assert chosen["checkpoint"] == str(folder / "checkpoint_6.pt")
    assert chosen["global_step"] == 600 and not chosen["is_start"] and not chosen["is_last"]
    folder = _write_run(tmp_path / "lower", 0.45, [0.35, 0.30, 0.40, 0.35])
    chosen = select_finetuned_checkpoint(folder, "ppo", start, final_step=800, layout_seed=SEED)
    assert chosen["checkpoint"] == str(start) and chosen["is_start"]
    assert chosen["success_rate"] == 0.45 and chosen["global_step"] == 0
    assert json.loads((folder / SELECTION_FILE).read_text())["checkpoint"] == str(start)


def test_an_evaluation_without_its_checkpoint_cannot_be_kept(tmp_path):
    folder = _write_run(tmp_path / "finetune", 0.2, [0.3, 0.9, 0.5], missing=(2,))
    chosen = select_finetuned_checkpoint(folder, "ppo", tmp_path / "start.pt", final_step=600, layout_seed=SEED)
    assert chosen["global_step"] == 600 and chosen["is_last"]
    assert [c["global_step"] for c in chosen["candidates"]] == [0, 200, 600]


def test_dsrl_checkpoints_are_named_by_vector_step_and_last_mode_keeps_latest(tmp_path):
    folder = _write_run(tmp_path / "finetune", None, [0.6, 0.1], algorithm="dsrl")
    chosen = select_finetuned_checkpoint(folder, "dsrl", tmp_path / "start.pt", final_step=400,
                                         layout_seed=SEED)
    assert chosen["checkpoint"] == str(folder / "dsrl_2.pt") and not chosen["is_start"]
    last = select_finetuned_checkpoint(folder, "dsrl", tmp_path / "start.pt", final_step=400,
                                       layout_seed=SEED, mode="last")
    assert last["checkpoint"] == str(folder / "latest.pt") and last["is_last"]
    assert last["success_rate"] is None and last["candidates"] == []
    with pytest.raises(ValueError, match="finetune.select"):
        select_finetuned_checkpoint(folder, "dsrl", tmp_path / "start.pt", 400, SEED, "first")


def test_evaluations_on_other_layouts_are_never_candidates(tmp_path):
    # a run started before eval.rl_seed scored its reference and evaluations on the final
    # evaluation's own layouts (no seed recorded); a resumed part on rl_seed's is a candidate
    folder = _write_run(tmp_path / "finetune", 0.9, [0.95, 0.2, 0.3],
                        seeds=[None, None, SEED, SEED])
    chosen = select_finetuned_checkpoint(folder, "ppo", tmp_path / "start.pt", final_step=600,
                                         layout_seed=SEED)
    assert [c["global_step"] for c in chosen["candidates"]] == [400, 600]
    assert chosen["global_step"] == 600 and chosen["is_last"]
    folder = _write_run(tmp_path / "old", 0.9, [0.95], seeds=[None, None])
    chosen = select_finetuned_checkpoint(folder, "ppo", tmp_path / "start.pt", final_step=200,
                                         layout_seed=SEED)
    assert chosen["candidates"] == [] and chosen["checkpoint"] == str(folder / "latest.pt")
    assert chosen["is_last"] and chosen["success_rate"] is None


def test_evaluations_during_rl_never_share_layouts_with_the_final_evaluation():
    with pytest.raises(ValueError, match="rl_seed"):
        EvalConfig(seed=100_000, rl_seed=100_001, num_envs=2).validate()
    EvalConfig(seed=100_000, rl_seed=100_002, num_envs=2).validate()
    cfg = RunConfig()
    cfg.demos.seed = cfg.eval.rl_seed + 1
    with pytest.raises(ValueError, match="rl_seed"):
        cfg.validate()
    cfg = RunConfig()
    cfg.finetune.select = "first"
    with pytest.raises(ValueError, match="finetune.select"):
        cfg.validate()


def test_the_evaluations_during_rl_use_rl_seed(monkeypatch):
    from maniflow_rl.evaluation import evaluate as evaluate_module
    from maniflow_rl.pipeline.finetune import make_metaworld_eval_fn

    seen = {}

    def fake_evaluate(policy, runner, n, seed, progress):
        seen.update(seed=seed)
        return {"success_rate": 0.5}

    monkeypatch.setattr(evaluate_module, "evaluate_policy", fake_evaluate)
    cfg = RunConfig().finetune_config()
    result = make_metaworld_eval_fn(cfg)(None, None, 20)
    assert seen["seed"] == cfg.eval.rl_seed != cfg.eval.seed
    assert result == {"success_rate": 0.5, "layout_seed": cfg.eval.rl_seed}


def test_both_trainers_checkpoint_every_evaluated_policy(tmp_path):
    import torch

    from maniflow_rl import (DSRLConfig, ManiFlowDSRLTrainer, ManiFlowDummyEnvRunner,
                             create_maniflow_ppo_trainer)
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

    shape_meta = {"obs": {"agent_pos": {"shape": [4]}}, "action": {"shape": [2]}}
    tiny = {"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1, "num_inference_steps": 2,
            "n_emb": 32, "n_layer": 1, "n_head": 2}
    def seeded_eval(policy, runner, num_episodes):   # as make_metaworld_eval_fn records it
        from maniflow_rl.evaluation.evaluate import evaluate_policy

        return {**evaluate_policy(policy, runner, num_episodes, seed=SEED, progress=False),
                "layout_seed": SEED}

    ppo = create_maniflow_ppo_trainer(
        shape_meta=shape_meta, policy_config={**tiny, "noise_method": "flow_noise"},
        ppo_config=dict(total_timesteps=64, num_envs=2, num_steps_per_rollout=4,
                        batch_size=8, update_epochs=1, save_interval=1000, log_interval=1000,
                        eval_interval=3, eval_episodes=1, save_path=str(tmp_path / "ppo"),
                        seed=0))
    ppo.eval_fn = seeded_eval
    ppo.train(progress=False)   # 4 iterations of 16 env steps: evaluated at 3 and at the end
    ppo.close()
    assert sorted(p.name for p in (tmp_path / "ppo").glob("checkpoint_*.pt")) == \
        ["checkpoint_3.pt", "checkpoint_4.pt"]
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text()
            .splitlines()]
    evaluated = {row["iteration"]: row["global_step"] for row in rows
                 if "eval/success_rate" in row}
    assert evaluated == {3: 48, 4: 64}
    for iteration, step in evaluated.items():   # each file holds the evaluated policy's step
        payload = torch.load(tmp_path / "ppo" / f"checkpoint_{iteration}.pt",
                             weights_only=False)
        assert (payload["iteration"], payload["global_step"]) == (iteration, step)
    chosen = select_finetuned_checkpoint(tmp_path / "ppo", "ppo", tmp_path / "start.pt",
                                         final_step=ppo.global_step, layout_seed=SEED)
    assert [c["global_step"] for c in chosen["candidates"]] == [48, 64]

    torch.manual_seed(0)
    dsrl = ManiFlowDSRLTrainer(
        ManiFlowPointcloudRLPolicy(shape_meta, **tiny),
        ManiFlowDummyEnvRunner(shape_meta, num_envs=2, max_episode_steps=10, seed=0),
        DSRLConfig(num_envs=2, total_timesteps=32, warmup_steps=1000, batch_size=8,
                   hidden_dims=(16, 16), eval_interval=3, eval_episodes=1, log_interval=100,
                   save_interval=10**6, save_path=str(tmp_path / "dsrl"), seed=0),
        eval_fn=seeded_eval)
    dsrl.train(progress=False)   # 8 vector steps: evaluated at 3, 6 and at the end
    dsrl.close()
    saved = sorted(p.name for p in (tmp_path / "dsrl").glob("dsrl_*.pt"))
    assert saved == ["dsrl_3.pt", "dsrl_6.pt", "dsrl_8.pt"]
    chosen = select_finetuned_checkpoint(tmp_path / "dsrl", "dsrl", tmp_path / "start.pt",
                                         final_step=dsrl.global_step, layout_seed=SEED)
    assert [c["global_step"] for c in chosen["candidates"]] == [12, 24, 32]
