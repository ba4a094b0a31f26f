"""``pgrl check CONFIG``: do the two backends compute the same thing for this config's network?

Builds both backends with identical weights, feeds one seeded synthetic batch, and reports per
layer the largest difference of forward probabilities, gradients and one RMSprop step, plus the
NumPy gradient's error against central finite differences (float64). ``--explain`` adds, for the
same batch, how much each classic porting mistake (DESIGN.md) would change the first update.
"""

from __future__ import annotations

import copy

import numpy as np

from pgrl.config import Config
from pgrl.reinforce import build_policy
from pgrl.sparse import random_frame_differences

FD_ENTRIES = 12  # finite-difference checks per layer (all entries when the layer is smaller)


def synthetic_batch(cfg: Config, obs_dim: int, n: int = 256, seed: int = 0, n_actions: int = 2):
    """Seeded (obs, actions, advantages); Pong-like sparse int8 frame differences for Pong;
    actions uniform over ``n_actions`` for the categorical head."""
    rng = np.random.default_rng(seed)
    if cfg.env.id.startswith("ALE/"):
        obs = random_frame_differences(rng, n, obs_dim)
    else:
        obs = rng.standard_normal((n, obs_dim))
    if cfg.policy.head == "categorical":
        actions = rng.integers(0, n_actions, n)
    else:
        actions = (rng.random(n) < 0.5).astype(np.int8)
    advantages = rng.standard_normal(n)
    return obs, actions, advantages


def _rel(a, b) -> tuple[float, float]:
    diff = float(np.max(np.abs(a - b))) if np.size(a) else 0.0
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(b)))) if np.size(a) else 0.0
    return diff, (diff / scale if scale > 0 else 0.0)


def finite_difference_errors(
    cfg: Config, obs_dim: int, weights, batch, seed: int = 0, n_actions: int = 2
):
    """Per layer: max relative error of NumPy float64 gradients vs central differences."""
    cfg64 = copy.deepcopy(cfg)
    cfg64.policy.dtype = "float64"
    policy = build_policy(cfg64, obs_dim, "numpy", n_actions)
    weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    policy.set_weights(weights)
    obs, actions, advantages = batch
    grads = policy.gradients(obs, actions, advantages)
    rng = np.random.default_rng(seed)
    errors = {}
    for name, g in grads.items():
        # entries that carry gradient (a Pong W1 row whose pixel never changed has none, and a
        # central difference there measures only round-off)
        candidates = np.flatnonzero(np.abs(g) > 1e-3 * np.max(np.abs(g)))
        if candidates.size == 0:
            candidates = np.arange(g.size)
        flat = rng.choice(candidates, min(FD_ENTRIES, candidates.size), replace=False)
        worst = 0.0
        scale = max(float(np.max(np.abs(g))), 1e-12)
        for i in flat:
            idx = np.unravel_index(i, g.shape)
            old = weights[name][idx]
            eps = 1e-5 * max(1.0, abs(old))  # truncation ~eps^2, round-off ~1e-16 |L| / eps
            losses = []
            for w_i in (old + eps, old - eps):
                probe = {k: v.copy() for k, v in weights.items()}
                probe[name][idx] = w_i
                policy.set_weights(probe)
                losses.append(policy.loss(obs, actions, advantages))
            fd = (losses[0] - losses[1]) / (2 * eps)
            worst = max(worst, abs(fd - g[idx]) / max(abs(g[idx]), abs(fd), 1e-3 * scale))
        errors[name] = worst
    return errors


def run_check(cfg: Config, obs_dim: int, explain: bool = False, seed: int = 0, n_actions: int = 2):
    """The report as (lines, passed); ``n_actions`` is the env's action count."""
    tol = 1e-10 if cfg.policy.dtype == "float64" else 1e-5
    policies = {b: build_policy(cfg, obs_dim, b, n_actions) for b in ("numpy", "tensorflow")}
    weights = policies["numpy"].get_weights()
    policies["tensorflow"].set_weights(weights)
    batch = synthetic_batch(cfg, obs_dim, seed=seed, n_actions=n_actions)
    obs, actions, advantages = batch
    categorical = cfg.policy.head == "categorical"
    p = {
        b: pol.action_probs(obs) if categorical else pol.action_prob(obs)
        for b, pol in policies.items()
    }
    g = {b: pol.gradients(*batch) for b, pol in policies.items()}
    for pol in policies.values():
        pol.apply_gradients(g["numpy"])  # the same gradient: isolates the optimizer step
    stepped = {b: pol.get_weights() for b, pol in policies.items()}
    fd = finite_difference_errors(cfg, obs_dim, weights, batch, seed, n_actions)

    lines = [
        f"pgrl check: {cfg.env.id}, obs {obs_dim}, hidden {cfg.policy.hidden_sizes}, "
        f"{cfg.policy.dtype}, reduction {cfg.policy.reduction}, bias {cfg.policy.bias}, "
        + (f"categorical head, {n_actions} actions, " if categorical else "")
        + f"batch {len(actions)} (seed {seed})",
        f"tolerance: relative {tol:g} between backends, 1e-6 against finite differences",
        "",
        f"{'quantity':22} {'max abs diff':>13} {'max rel diff':>13}  verdict",
    ]
    failures = []

    def row(label, abs_diff, rel_diff, limit):
        ok = rel_diff <= limit
        if not ok:
            failures.append(label)
        lines.append(f"{label:22} {abs_diff:13.3e} {rel_diff:13.3e}  {'ok' if ok else 'FAIL'}")

    row("action_probs" if categorical else "action_prob", *_rel(p["numpy"], p["tensorflow"]), tol)
    for name in weights:
        row(f"gradient {name}", *_rel(g["numpy"][name], g["tensorflow"][name]), tol)
    for name in weights:
        step_np = stepped["numpy"][name] - weights[name]
        step_tf = stepped["tensorflow"][name] - weights[name]
        row(f"RMSprop step {name}", *_rel(step_np, step_tf), tol)
    for name, err in fd.items():
        row(f"finite diff. {name}", float("nan"), err, 1e-6)
    passed = not failures
    lines += [
        "",
        "PASS: the backends agree" if passed else f"FAIL: {', '.join(failures)} outside tolerance",
    ]
    if explain:
        lines += [""] + explain_causes(cfg, obs_dim, weights, batch, n_actions)
    return lines, passed


def explain_causes(cfg: Config, obs_dim: int, weights, batch, n_actions: int = 2) -> list[str]:
    """How much each classic mistake would change this config's first update."""
    obs, actions, advantages = batch
    o = cfg.optimizer
    other_reduction = "mean" if cfg.policy.reduction == "sum" else "sum"

    def first_step(grads=None, flip_eps=False, reduction=None):
        """The first update's weight change, for this config with one knob changed."""
        variant = copy.deepcopy(cfg)
        variant.optimizer.epsilon_inside_sqrt ^= flip_eps
        variant.policy.reduction = reduction or cfg.policy.reduction
        policy = build_policy(variant, obs_dim, "numpy", n_actions)
        policy.set_weights(weights)
        g = grads if grads is not None else policy.gradients(obs, actions, advantages)
        policy.apply_gradients(g)
        after = policy.get_weights()
        return np.concatenate([(after[k] - weights[k]).ravel() for k in weights])

    reference = first_step()
    ref_norm = float(np.linalg.norm(reference))

    def change(step):
        return float(np.linalg.norm(step - reference)) / ref_norm

    policy = build_policy(cfg, obs_dim, "numpy", n_actions)
    policy.set_weights(weights)
    g = policy.gradients(obs, actions, advantages)
    tiny = {k: v * 1e-6 for k, v in g.items()}
    tiny_ref, tiny_flip = first_step(grads=tiny), first_step(grads=tiny, flip_eps=True)
    rows = []
    if cfg.policy.head == "bernoulli":
        # cause 1: back-propagating the logit (z - y) instead of sigmoid(z) - y. The gradient's
        # dL/dz is A * (sigmoid(z) - y); advantages rescaled by (z - y) / (sigmoid(z) - y) give
        # dL/dz = A * (z - y), the mistake's.
        z = policy.logits(obs)
        sigmoid_minus_y = np.where(
            actions == 1, -np.exp(-np.logaddexp(0, z)), np.exp(-np.logaddexp(0, -z))
        )
        wrong = policy.gradients(obs, actions, advantages * (z - actions) / sigmoid_minus_y)
        rows.append(("1 logit instead of sigmoid(logit) - y", change(first_step(grads=wrong))))
    rows += [
        (
            f"2 epsilon {'outside' if o.epsilon_inside_sqrt else 'inside'} the sqrt",
            change(first_step(flip_eps=True)),
        ),
        (
            "2 ... with gradients 1e-6 as large",
            float(np.linalg.norm(tiny_flip - tiny_ref) / np.linalg.norm(tiny_ref)),
        ),
        (f"3 reduction '{other_reduction}'", change(first_step(reduction=other_reduction))),
    ]
    lines = [
        "How much each usual cause of NumPy/TF disagreement would change this config's",
        "first update (|step_variant - step| / |step|, RMSprop from zero state):",
        "",
    ]
    return lines + [f"  {label:44} {value:10.3g}" for label, value in rows] + OTHER_CAUSES


OTHER_CAUSES = [
    "",
    "  4 ReLU mask h < 0 after clamping: masks nothing; the finite-difference rows",
    "    above catch it (pgrl masks h <= 0).",
    "  5 dtype: float32 vs float64 differs ~1e-7 relative per operation; compare the",
    "    tolerance line above for this config's dtype.",
    "  6 returns: Pong's reset at each point and per-episode standardization are",
    "    config keys (train.reset_on_nonzero, train.standardize); std 0 gives zeros.",
    "  7 Keras keeps a float learning rate in float32 (2.5e-9 relative error per step",
    "    for 1e-4); pgrl's KerasRMSprop keeps it in float64.",
]
