"""REINFORCE, the whole algorithm: Karpathy's pg-pong loop for any pgrl backend.

    from pgrl import load_config, train
    summary = train(load_config("cartpole"), out="runs/cartpole")

Each update plays ``train.batch_episodes`` complete episodes with the current policy (actions
``a = u < p``; categorical head: the first ``k`` with ``u < cumsum(pi)[k]``), gives every step its
advantage (the discounted return ``G_t``, minus ``V(s_t)`` with ``train.baseline = "value"``,
standardized), takes one RMSprop step on ``L = sum_t A_t * BCE(a_t, z_t) - c * sum_t H_t``
(categorical: ``CE``; ``c``: ``optimizer.entropy_coef``), fits the value network to the returns
and logs every episode and the update. The run directory lives in :mod:`pgrl.rundir`, the screen
and TensorBoard in :mod:`pgrl.monitor`.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from pgrl.build import build_policy, build_value_net, env_actions
from pgrl.checkpoint import CheckpointError, read_init, restore_policy
from pgrl.config import Config, ConfigError
from pgrl.monitor import HoldInterrupts, ProgressBar, TensorBoard
from pgrl.optim import global_norm
from pgrl.policies import Policy, ValueNet
from pgrl.returns import (
    center_and_scale,
    explained_variance,
    gae,
    pool_moments,
    pooled_explained_variance,
    standardize,
    standardize_advantages,
)
from pgrl.rollout import EpisodeBatch, RolloutError, slot_generators, slot_states
from pgrl.rundir import RunDir, RunState
from pgrl.slots import Slots, add_in_order, bootstrap_values, slot_obs_moments
from pgrl.sparse import take_rows
from pgrl.workers import make_runner


def reinforce_update(policy: Policy, value: ValueNet | None, slots, cfg: Config) -> dict:
    """One REINFORCE update from a batch of complete episodes.

    ``slots`` holds the batch's episodes split by env slot (:class:`pgrl.slots.Slots`, here or
    at the rollout workers that played them); an EpisodeBatch in hand is split here. Per slot,
    where it was played: G_t = sum_k gamma^k r_{t+k} (restarting at every point with
    ``train.reset_on_nonzero``; with a value network and ``value.bootstrap``, an episode cut by
    its time limit continues with gamma^(T-t) V(s_T) of the state it was cut at), and
    x_t = G_t, or G_t - V(s_t) with a value network. Here: the slots' moments of x, pooled in
    slot order, give the batch's mean and std (``train.standardize = "batch"``); each slot then
    gives its sums of the gradient of sum_t A_t * -log pi(a_t | s_t) (minus the entropy bonus)
    and of V's fit to G_t; added in slot order they make one RMSprop step of the policy, then
    ``value.steps`` steps of V on (G_t - V(s_t))^2.

    Returns:
        The policy's stats (loss, grad_norm, mean_prob, entropy); with a value network also
        its first step's value_loss and the explained variance of V before the fit.
    """
    if isinstance(slots, EpisodeBatch):
        slots = Slots(slots, policy, value, cfg)
    center, scale = center_and_scale(pool_moments(m[0] for m in slots.moments))
    parts = slots.gradients(center, scale)
    stats = _step(policy, [p for p, _ in parts])
    if value is not None:
        fit = [_step(value, [v for _, v in parts])]
        for _ in range(cfg.value.steps - 1):
            fit.append(_step(value, slots.value_gradients(value)))
        stats.update(fit[0])
        stats["explained_variance"] = pooled_explained_variance(m[:2] for m in slots.moments)
    if policy.obs_norm is not None:  # after the steps, which saw the statistics of the play
        policy.obs_norm.update(m[2] for m in slots.moments)
    return stats


def _step(net, parts: list[tuple[dict, dict]]) -> dict:
    """The slots' gradient parts added in slot order (divided by the batch's steps with
    ``reduction = "mean"``), then one clipped RMSprop step; the stats of the summed loss."""
    grads, sums = add_in_order(parts)
    n = sums.pop("steps")
    if net.reduction == "mean":
        grads = {k: g / n for k, g in grads.items()}
        sums = {k: v / n if k.endswith("loss") else v for k, v in sums.items()}
    norm = global_norm(grads)
    if np.isfinite(norm):  # otherwise the run stops at _check_update, weights untouched
        net.apply_gradients(grads)
    if "value_loss" in sums:
        return {"value_loss": sums["value_loss"], "value_grad_norm": norm}
    return {
        "loss": sums["loss"],
        "grad_norm": norm,
        "mean_prob": sums["prob"] / n,
        "entropy": sums["entropy"] / n,
    }


def ppo_update(
    policy: Policy, value: ValueNet, batch, cfg: Config, order: np.random.Generator
) -> dict:
    """One PPO update from a batch of complete episodes (a pgrl.rollout.EpisodeBatch).

    A_t = GAE(lambda) of V(s_t) before the update (V(s_T) of a truncated episode's last state
    with ``value.bootstrap``, else 0), standardized as ``train.standardize``; targets A_t + V(s_t);
    log pi_old(a_t | s_t) of the policy that played the batch. Then ``ppo.epochs`` passes over the
    steps in an order drawn from ``order``, in minibatches of ``ppo.minibatch_size``: one RMSprop
    step of the clipped surrogate (advantages standardized per minibatch with
    ``ppo.normalize_advantages``) and one of the value fit (clipped with ``ppo.clip_value``). The
    epochs stop after a minibatch whose approximate KL exceeds ``ppo.target_kl``.

    Returns:
        The policy's and value net's stats averaged over the minibatch steps, the explained
        variance of V before the update, and ``epochs`` (passes begun).
    """
    t, p = cfg.train, cfg.ppo
    values = value.predict(batch.obs)
    bootstrap = bootstrap_values(value, batch, cfg)
    advantages, targets = gae(
        batch.rewards, values, batch.ep_bounds, t.gamma, p.gae_lambda, bootstrap, t.reset_on_nonzero
    )
    advantages = standardize_advantages(advantages, batch.ep_bounds, t.standardize)
    old_log_probs = policy.log_probs(batch.obs, batch.actions)
    old_values = values if p.clip_value is not None else None
    steps, epochs, stopped = [], 0, False
    while epochs < p.epochs and not stopped:
        epochs += 1
        for idx in _minibatches(order.permutation(batch.steps), p.minibatch_size):
            obs = take_rows(batch.obs, idx)
            adv = standardize(advantages[idx]) if p.normalize_advantages else advantages[idx]
            stats = policy.update(obs, batch.actions[idx], adv, old_log_probs[idx], p.clip)
            if old_values is None:
                stats.update(value.update(obs, targets[idx]))
            else:
                stats.update(value.update(obs, targets[idx], old_values[idx], p.clip_value))
            steps.append(stats)
            stopped = p.target_kl is not None and stats["approx_kl"] > p.target_kl
            if stopped:
                break
    stats = {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}
    stats["explained_variance"] = explained_variance(values, targets)
    stats["epochs"] = epochs
    if policy.obs_norm is not None:  # after the steps, which saw the statistics of the play
        policy.obs_norm.update(slot_obs_moments(batch))
    return stats


def _minibatches(permutation: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive slices of ``size`` indices (the last one shorter), sorted within each so that
    rows are read in order."""
    return [np.sort(permutation[i : i + size]) for i in range(0, len(permutation), size)]


def _loop(
    cfg: Config, run: RunDir, runner, policy: Policy, value: ValueNet | None, rngs, state, report
) -> dict:  # rngs: (slot generators, PPO's minibatch order)
    """Collect -> advantages -> update -> log, until a budget or the goal stops the run."""
    t = cfg.train
    bar = ProgressBar(
        t.episodes, state.episodes, f"{cfg.env.id} {policy.backend}", cfg.log.progress
    )
    tensorboard = TensorBoard(run.path / "tensorboard") if cfg.log.tensorboard else None
    hold = HoldInterrupts().install()
    clock = time.perf_counter() - state.wall_time
    committed_rng = rng_state(rngs)  # a batch cut short by Ctrl-C restarts from here
    dead = 0  # updates in a row whose policy had no gradient and no entropy left

    def stop(reason: str) -> dict:  # the last update's checkpoint, and the run's summary
        run.save_checkpoint(policy, state, committed_rng, cfg, value)
        summary = state.summary(cfg, policy.backend, reason)
        run.write_summary(summary)
        return summary

    try:
        # NaN and inf: one clear error from _check_finite, not NumPy's warnings on the way
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while (stopped_by := state.stop_reason(t)) is None:
                t0 = time.perf_counter()
                n = min(t.batch_episodes, t.episodes - state.episodes)
                batch, slots = runner.play(policy, value, rngs[0], n, t.algorithm == "ppo")
                t1 = time.perf_counter()
                played = dict(runner.timing)
                with hold:  # a checkpoint pairs the weights, counters and RNG of one same update
                    if t.algorithm == "ppo":
                        stats = ppo_update(policy, value, batch, cfg, rngs[1])
                    else:
                        stats = reinforce_update(policy, value, slots, cfg)
                    dead = _check_update(policy, value, stats, state.updates + 1, cfg, dead)
                    t2 = time.perf_counter()
                    timing, seconds = _seconds(runner.timing, played, t0, t1, t2)
                    rows, update_row = state.add_batch(
                        batch, stats, seconds, t2 - clock, t.solved_mean100
                    )
                    run.log(rows, update_row)
                    committed_rng = rng_state(rngs)
                    checkpointed = state.updates % t.checkpoint_every == 0
                    if checkpointed:
                        run.save_checkpoint(policy, state, committed_rng, cfg, value)
                    if report is not None:
                        report(state.progress(), checkpointed)
                    _show(bar, tensorboard, state, batch, stats, timing)
    except KeyboardInterrupt:  # the partial batch is dropped; the checkpoint is the last update's
        stop("interrupted")
        raise Interrupted(f"checkpoint of update {state.updates} in {run.path}") from None
    except RolloutError as e:  # likewise: the run stops at its last update, resumable
        stop("failed")
        raise RolloutError(
            f"{e}; checkpoint of update {state.updates} in {run.path}, --resume continues it"
        ) from None
    finally:
        hold.uninstall()
        bar.close()
        run.close()
        if tensorboard is not None:
            tensorboard.close()
    return stop(stopped_by)


def _seconds(timing: dict, played: dict, t0: float, t1: float, t2: float) -> tuple[dict, tuple]:
    """The update's seconds by part, and as updates.csv lists them (rollout, update, broadcast,
    transfer, gradient): the runner's own timing (``played``: as it was after the rollout), and
    the learner's update, less the gradient and transfer seconds the runner spent in it."""
    remote = timing["gradient"] + timing.get("transfer", 0.0) - played.get("transfer", 0.0)
    parts = {
        "rollout": timing.get("rollout", t1 - t0),
        "gradient": timing["gradient"],
        "update": max(t2 - t1 - remote, 0.0),
    }
    if "broadcast" in timing:
        parts.update(broadcast=timing["broadcast"], transfer=timing["transfer"])
    row = (parts["rollout"], parts["update"], *(parts.get(k, 0.0) for k in _REMOTE))
    return parts, (*row, parts["gradient"])


def _show(bar, tensorboard, state, batch, stats: dict, timing: dict) -> None:
    """The progress bar and TensorBoard after an update."""
    sps = state.env_steps / max(state.wall_time, 1e-9)
    ev = stats.get("explained_variance")
    bar.update(batch.n_episodes, state.running_return, state.mean100, sps, timing, ev)
    if tensorboard is not None:
        scalars = {"running_return": state.running_return, "mean100": state.mean100}
        tensorboard.write(state.updates, {**stats, **scalars, "steps_per_second": sps})


def train(
    cfg: Config,
    out: str | Path | None = None,
    resume: bool = False,
    backend: str | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
    report=None,
    address: str | None = None,
    init: dict | None = None,
) -> dict:
    """Train a policy as ``cfg`` says; returns the run's summary (also written to summary.json).

    Args:
        cfg: a :class:`pgrl.config.Config` (see :func:`pgrl.config.load_config`); validated.
        out: run directory (created); ``runs/<env>-<backend>-seed<k>`` when omitted.
        resume: continue from ``out/checkpoint.npz`` (weights, optimizer, counters, RNG).
        backend: overrides ``cfg.policy.backend`` (a checkpoint of either backend resumes).
        overwrite: start afresh in a directory that already holds a run, removing the old
            run's files first (otherwise refused, so that a forgotten ``--resume`` cannot wipe
            a run).
        allow_changes: resume even where the config differs from the run's in more than
            budgets, logging, checkpoint interval and backend (see
            :data:`pgrl.rundir.RESUMABLE_CHANGES`); changes are recorded in ``resumes.log``.
        report: ``report(progress, checkpointed)`` after every update: ``progress`` as
            :meth:`pgrl.rundir.RunState.progress`, ``checkpointed`` whether ``out`` now holds
            that update's checkpoint (sweeps report to Ray Tune this way).
        address: with ``env.runner = "ray"``, the Ray head's ``HOST:PORT`` (default:
            ``RAY_ADDRESS``, else a new local Ray instance).
        init: the weights ``cfg.train.init`` names, already read (as
            :func:`pgrl.checkpoint.read_init` gives them): a Ray trial gets them from its
            driver, which can read the file. None: read here.

    Raises:
        ConfigError, CheckpointError: one-line problems with the config, the run directory or
            the checkpoint.
        DivergedError: the loss, gradients or weights became NaN or inf; the last checkpoint
            (all finite) is kept.
        Interrupted: a KeyboardInterrupt, after a checkpoint of the last completed update was
            written.
    """
    cfg, run, checkpoint, start = _prepare(
        cfg, out, resume, backend, overwrite, allow_changes, init
    )
    runner = None
    try:
        runner = make_runner(cfg, cfg.policy.backend, address)
        policy, value, rngs = _build(cfg, runner)
        if checkpoint is not None:
            state = run.restore(checkpoint, policy, rngs[0], value)
            _restore_order(rngs[1], checkpoint["rng_state"], run.checkpoint_path)
        else:
            state = RunState()
            if start is not None:  # weights, and a checkpoint's RMSprop state
                restore_policy(policy, start, cfg.train.init, bool(start["optimizer_state"]))
        run.start(cfg)
        if checkpoint is None:  # a run killed before its first update can still be resumed
            run.save_checkpoint(policy, state, rng_state(rngs), cfg, value)
        return _loop(cfg, run, runner, policy, value, rngs, state, report)
    finally:
        run.close()
        if runner is not None:
            runner.close()


def _prepare(
    cfg: Config, out, resume: bool, backend, overwrite: bool, allow_changes: bool, init=None
):
    """``(cfg, run, checkpoint, start)``: a validated copy of the config, its run directory
    (checked and locked), the checkpoint to resume (or None) and ``train.init``'s weights (or
    None), all read before a file of the run is touched."""
    cfg = copy.deepcopy(cfg)  # the caller's config is left as it was
    if backend is not None:
        cfg.policy.backend = backend
    cfg.validate()
    if out is not None and str(out).strip() == "":
        raise ConfigError("--out: empty path; give a directory for the run")
    if cfg.log.tensorboard:
        TensorBoard.check_installed()
    # train.init is read (and checked) before the run directory is touched
    start = None
    if cfg.train.init and not resume:
        start = init if init is not None else read_init(cfg.train.init)
    name = f"{cfg.env.id.split('/')[-1]}-{cfg.policy.backend}-seed{cfg.train.seed}"
    run = RunDir(out if out is not None else Path("runs") / name)
    checkpoint = run.prepare(cfg, resume, overwrite, allow_changes)  # before a file is touched
    return cfg, run, checkpoint, start


def _build(cfg: Config, envs) -> tuple[Policy, ValueNet | None, tuple]:
    """The policy, the value network (or None), and the generators from the seed: one per env
    slot, and the one that orders PPO's minibatches (``default_rng([seed, 2])``)."""
    obs_dim = int(envs.single_observation_space.shape[0])
    policy = build_policy(cfg, obs_dim, n_actions=env_actions(envs, cfg))
    value = build_value_net(cfg, obs_dim, policy=policy) if cfg.train.baseline == "value" else None
    seed = cfg.train.seed
    return policy, value, (slot_generators(seed, envs.num_envs), np.random.default_rng([seed, 2]))


def _restore_order(order: np.random.Generator, state: dict, path) -> None:
    """The minibatch order's generator as a checkpoint left it (a checkpoint without one, of a
    run that had no minibatches, leaves it at its seed)."""
    if "minibatch" not in state:
        return
    try:
        order.bit_generator.state = state["minibatch"]
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: unusable minibatch RNG state: {e}") from None


def rng_state(rngs: tuple) -> dict:
    """What a checkpoint keeps of :func:`_build`'s generators: the slots' states, and the
    minibatch order's under ``"minibatch"``."""
    return {**slot_states(rngs[0]), "minibatch": rngs[1].bit_generator.state}


_REMOTE = ("broadcast", "transfer")  # seconds of an update that only remote rollouts spend


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the checkpoint of the last completed update was written."""


class DivergedError(ConfigError):
    """Training produced NaN or inf; reported as one line."""


DEAD_UPDATES = 3  # updates in a row of a policy that can no longer change before a run stops


def _check_update(
    policy: Policy, value: ValueNet | None, stats: dict, update: int, cfg: Config, dead: int
) -> int:
    """Stop at the first update whose losses, gradient norms or new weights are not finite, or
    at the DEAD_UPDATES-th in a row whose policy had exactly zero gradient and zero entropy (a
    deterministic policy whose every action was its certain one: no update can change it again,
    as after too large a step). Returns the updates in a row of the latter kind."""
    _check_finite(policy, value, stats, update, cfg)
    dead = dead + 1 if stats["grad_norm"] == 0 and stats["entropy"] == 0 else 0
    if dead >= DEAD_UPDATES:
        lr = cfg.optimizer.learning_rate
        raise DivergedError(
            f"update {update}: the policy is deterministic, with zero gradient for {dead} "
            f"updates (optimizer.learning_rate = {lr:g} too large?); the run stopped, its last "
            "checkpoint is kept"
        )
    return dead


def _check_finite(
    policy: Policy, value: ValueNet | None, stats: dict, update: int, cfg: Config
) -> None:
    for net, keys, section in (
        (policy, ("loss", "grad_norm"), "optimizer"),
        (value, ("value_loss", "value_grad_norm"), "value"),
    ):
        if net is None:
            continue
        bad = [k for k in keys if not np.isfinite(stats[k])]
        if bad or not all(np.isfinite(w).all() for w in net.get_weights().values()):
            what = ", ".join(bad) or ("weights" if net is policy else "value weights")
            lr = getattr(cfg, section).learning_rate
            raise DivergedError(
                f"update {update}: {what} became NaN or inf ({section}.learning_rate = {lr:g} "
                "too large?); the run stopped, its last checkpoint is kept"
            )
