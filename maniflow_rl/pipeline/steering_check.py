"""Before a DSRL run: can steering the initial noise move this policy's actions at all?

DSRL keeps the imitation policy frozen and only chooses its initial noise, so it can only pick
among the chunks the policy already produces. ``steering_authority`` measures how far the
executed chunk moves when only the noise changes (``within``), against how far it moves
between states (``between``; ``maniflow_rl/rl/dsrl/diagnostics.py``, 1.), on the run's demo
observations. What it has meant on our MetaWorld runs (docs/TUNING.md, README "Latent
steering"): every DSRL gain of +10 points or more came from policies whose ratio
``within / between`` at ``N(0, I)`` was 0.16 or more; policies at 0.03-0.042 (a flow policy
that fits deterministic scripted demos closely maps all of ``N(0, I)`` to nearly one chunk)
gained +8 at most. ``check_steering_authority`` writes ``<out>/steering_authority.json`` once
and warns below ``LOW_AUTHORITY_RATIO``; it never stops the run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maniflow_rl.rl.dsrl import diagnostics
from maniflow_rl.utils.checkpoint import write_atomic

log = logging.getLogger("maniflow_rl")

AUTHORITY_FILE = "steering_authority.json"
LOW_AUTHORITY_RATIO = 0.1


def steering_authority(policy, demos: str | Path, scales: list[float], num_states: int = 48,
                       noises: int = 8, seed: int = 0) -> dict[str, Any]:
    """``within`` / ``between`` / ``ratio`` of the normalized chunks ``f(s, scale * eps)`` for
    ``noises`` draws at each of ``num_states`` demo observations spread over the demos."""
    from maniflow_rl.pipeline.finetune import demo_dataset_for
    from maniflow_rl.rl.dsrl.demos import demo_chunk_transitions

    transitions = list(demo_chunk_transitions(demo_dataset_for(policy, str(demos)),
                                              policy.n_obs_steps, policy.n_action_steps))
    picks = np.linspace(0, len(transitions) - 1, min(num_states, len(transitions))).astype(int)
    obs = {k: torch.as_tensor(np.stack([transitions[i]["obs"][k] for i in picks]))
           for k in transitions[0]["obs"]}
    generator = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        context, _ = policy.encode_obs(obs)
        repeated = context.repeat_interleave(noises, 0)
        for scale in scales:
            noise = scale * torch.randn(len(repeated), policy.horizon, policy.action_dim,
                                        generator=generator)
            chunks = policy.normalizer.normalize(
                "action", policy.actions_from_noise(repeated, noise)["action"])
            spread = diagnostics.chunk_spread(chunks.reshape(len(picks), noises, -1).numpy())
            out[str(scale)] = {k: round(v, 4) for k, v in spread.items()}
    return {"states": int(len(picks)), "noises_per_state": noises, "by_noise_scale": out}


def check_steering_authority(policy, demos: str | Path | None, out_dir: str | Path
                             ) -> dict[str, Any] | None:
    """The frozen ``policy``'s authority at ``N(0, I)`` on the ``demos`` (a ``demos.zarr``),
    stored in ``<out_dir>/steering_authority.json`` (read back on a resumed run); a warning
    when its ratio is below ``LOW_AUTHORITY_RATIO``. ``None`` without demos."""
    path = Path(out_dir) / AUTHORITY_FILE
    if path.is_file():
        return json.loads(path.read_text())
    if not demos or not Path(demos).exists():
        return None
    was_training = policy.training
    policy.eval()
    try:
        result = steering_authority(policy, demos, [1.0])
    finally:
        policy.train(was_training)
    result.update(result.pop("by_noise_scale")["1.0"])
    result["low"] = result["ratio"] < LOW_AUTHORITY_RATIO
    write_atomic(path, lambda f: f.write(json.dumps(result, indent=2).encode()))
    log.info("steering authority at N(0, I): the chunk moves %.3f across noises vs %.3f across "
             "states (ratio %.3f)", result["within"], result["between"], result["ratio"])
    if result["low"]:
        log.warning("the frozen policy maps nearly every initial noise to the same action chunk "
                    "(authority ratio %.3f < %.2f): DSRL can only choose among the chunks it "
                    "produces, and on our MetaWorld runs policies this rigid gained at most +8 "
                    "points. PPO (finetune.algorithm=ppo) changes the policy itself; see the "
                    "README, 'Latent steering'.", result["ratio"], LOW_AUTHORITY_RATIO)
    return result
