"""One gradient step of latent steering (DSRL): critic TD, NA distillation, actor, temperature,
Polyak target. Equations in ``losses.py``; the modules live on the trainer."""

from __future__ import annotations

import torch

from maniflow_rl.rl.dsrl import losses


def dsrl_gradient_step(trainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Update ``trainer``'s critics, actor and temperature on one replay ``batch``."""
    cfg = trainer.config
    actor, noise_critic = trainer.actor, trainer.noise_critic
    action_critic, opt = trainer.action_critic, trainer.optimizers
    alpha = trainer.alpha
    features, next_features = batch["features"], batch["next_features"]
    metrics: dict[str, float] = {}

    # --- critic: TD on the chunk (NA: Q^A(s, a)) or the noise (SAC: Q(s, w)) -------------
    with torch.no_grad():
        next_noise, next_log_prob = actor.sample(next_features, trainer._generator)
        next_q = trainer.target_noise_critic(next_features, next_noise).min(0).values
        target = losses.td_target(batch["reward"], batch["discount"], batch["terminated"],
                                  next_q, next_log_prob, alpha if cfg.backup_entropy else 0.0)
    td_critic, td_input, td_opt = ((action_critic, batch["action"], opt["action_critic"])
                                   if cfg.variant == "na" else
                                   (noise_critic, batch["noise"], opt["noise_critic"]))
    q = td_critic(features, td_input)
    critic_loss = losses.ensemble_regression_loss(q, target)
    td_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    td_opt.step()
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
            opt["noise_critic"].zero_grad(set_to_none=True)
            distill_loss.backward()
            opt["noise_critic"].step()
        metrics["distill_loss"] = distill_loss.item() if cfg.distill_steps else 0.0

    # --- actor: max_w min_e Q^W(s, w) - alpha log pi(w | s) ----------------------------------
    noise, log_prob = actor.sample(features, trainer._generator)
    q_actor = noise_critic(features, noise)
    actor_loss = losses.actor_loss(q_actor, log_prob, alpha)
    opt["actor"].zero_grad(set_to_none=True)
    actor_loss.backward()
    opt["actor"].step()
    metrics.update(actor_loss=actor_loss.item(), entropy=-log_prob.detach().mean().item(),
                   q_actor=q_actor.detach().min(0).values.mean().item())

    if cfg.auto_alpha:
        loss = losses.alpha_loss(trainer.log_alpha, log_prob, trainer.target_entropy)
        opt["alpha"].zero_grad(set_to_none=True)
        loss.backward()
        opt["alpha"].step()
    metrics["alpha"] = float(trainer.alpha)
    losses.polyak_update(trainer.target_noise_critic, noise_critic, cfg.tau)
    return metrics
