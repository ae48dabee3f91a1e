"""One gradient step of latent steering (DSRL): critic TD, NA distillation, actor, temperature,
Polyak target. Equations in ``losses.py``; the modules live on the trainer.

Every optimizer step is guarded: a non-finite loss or gradient leaves that module's weights
and optimizer state untouched and is counted in ``skipped_updates``."""

from __future__ import annotations

import torch

from maniflow_rl.rl.dsrl import losses
from maniflow_rl.rl.nonfinite import is_finite_number


def finite_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """``loss.backward(); optimizer.step()`` unless the loss or a gradient is NaN / inf (then
    nothing changes: gradients cleared, no step). Returns whether the step was taken."""
    optimizer.zero_grad(set_to_none=True)
    if not is_finite_number(loss.detach()):
        return False
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))   # one fused reduction
    if not is_finite_number(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


def dsrl_gradient_step(trainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Update ``trainer``'s critics, actor and temperature on one replay ``batch``."""
    cfg = trainer.config
    actor, noise_critic = trainer.actor, trainer.noise_critic
    action_critic, opt = trainer.action_critic, trainer.optimizers
    alpha = trainer.alpha
    features, next_features = batch["features"], batch["next_features"]
    metrics: dict[str, float] = {}
    taken: list[bool] = []

    # --- critic: TD on the chunk (NA: Q^A(s, a)) or the noise (SAC: Q(s, w)) -------------
    with torch.no_grad():
        next_noise, next_log_prob = actor.sample(trainer.actor_input(next_features),
                                                 trainer._generator)
        next_q = trainer.target_noise_critic(next_features, next_noise).min(0).values
        target = losses.td_target(batch["reward"], batch["discount"], batch["terminated"],
                                  next_q, next_log_prob, alpha if cfg.backup_entropy else 0.0)
    td_critic, td_input, td_opt = ((action_critic, batch["action"], opt["action_critic"])
                                   if cfg.variant == "na" else
                                   (noise_critic, batch["noise"], opt["noise_critic"]))
    q = td_critic(features, td_input)
    critic_loss = losses.ensemble_regression_loss(q, target)
    taken.append(finite_step(td_opt, critic_loss))
    metrics.update(critic_loss=critic_loss.item(), q_mean=q.detach().mean().item(),
                   td_target_mean=float(target.mean()))

    # --- NA: distill Q^W(s, w_j) <- mean_e Q^A(s, f(s, w_j)) on the stored alias pairs -----
    if cfg.variant == "na":
        m = batch["alias_noise"].shape[1]
        rep_features = features.repeat_interleave(m, 0)
        alias_noise = batch["alias_noise"].flatten(0, 1)
        with torch.no_grad():
            alias_q = action_critic(rep_features, batch["alias_action"].flatten(0, 1)).mean(0)
        for _ in range(cfg.distill_steps):
            distill_loss = losses.ensemble_regression_loss(
                noise_critic(rep_features, alias_noise), alias_q)
            taken.append(finite_step(opt["noise_critic"], distill_loss))
        metrics["distill_loss"] = distill_loss.item() if cfg.distill_steps else 0.0

    # --- actor: max_w min_e Q^W(s, w) - alpha log pi(w | s) [+ alpha log N(w; 0, I)] ---------
    noise, log_prob = actor.sample(trainer.actor_input(features), trainer._generator)
    q_actor = noise_critic(features, noise)
    penalty = losses.actor_penalty(log_prob, noise[:, :trainer.steered.noise_dim],
                                   cfg.actor_regularizer)   # prior_kl: the noise dims only
    actor_loss = losses.actor_loss(q_actor, penalty, alpha)
    if cfg.actor_regularizer == "prior_kl":
        metrics["prior_kl"] = penalty.detach().mean().item()
    taken.append(finite_step(opt["actor"], actor_loss))
    metrics.update(actor_loss=actor_loss.item(), entropy=-log_prob.detach().mean().item(),
                   q_actor=q_actor.detach().min(0).values.mean().item())

    if cfg.auto_alpha:
        loss = losses.alpha_loss(trainer.log_alpha, log_prob, trainer.target_entropy)
        taken.append(finite_step(opt["alpha"], loss))
    metrics["alpha"] = float(trainer.alpha)
    metrics["skipped_updates"] = float(taken.count(False))
    losses.polyak_update(trainer.target_noise_critic, noise_critic, cfg.tau)
    return metrics
