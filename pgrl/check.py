"""``pgrl check CONFIG``: do the two backends compute the same thing for this config's network?

Builds both backends with identical weights, feeds one seeded synthetic batch, and reports per
layer the largest difference of forward probabilities, gradients and one RMSprop step, plus the
NumPy gradient's error against central finite differences (float64); then the same for the value
network, the entropy bonus's gradients alone, and an RMSprop step with clipped gradients; for a
PPO config also PPO's clipped surrogate (and clipped value fit), with old log-probs that put
about half of the ratios outside the clip range. ``--explain`` adds how much each classic porting
mistake (DESIGN.md), or its categorical analogue, would change the first update on the same
batch, and for PPO how much each of its porting pitfalls would change the first minibatch's
update or the batch's; for the gaussian head also how much each of its own porting mistakes
would change the gradients and the first update.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from pgrl import nn, objectives
from pgrl.build import build_policy, build_value_net
from pgrl.config import Config
from pgrl.diagnose import (
    WORDS,
    HeadWords,
    dlogits,
    logit_mistake,
    port_log_prob,
    ppo_dlogits,
    ppo_ratio,
    rmsprop_step,
)
from pgrl.distributions import make_distribution
from pgrl.optim import RMSprop
from pgrl.returns import standardize
from pgrl.sparse import random_frame_differences
from pgrl.validate import BACKENDS

FD_ENTRIES = 12  # finite-difference checks per layer (all entries when the layer is smaller)
SATURATED = 1000.0  # max |logit| of the saturated rows: exp overflows float64 above ~709.8
ROUNDED32 = 12.0  # median |logit| of a confident policy: float32's 1 - sigmoid(z) rounds there
OUTSIDE = 1.5  # log rho ~ N(0, (OUTSIDE clip)^2): about half of the ratios outside the clip
LOG_STD_SPREAD = 0.5  # the gaussian head's log_std: init_log_std + [-0.5 .. 0.5] in the check
REACH = 1.25  # its max |mu| on the synthetic batch, in units of the largest |bound|


def synthetic_batch(
    cfg: Config,
    obs_dim: int,
    n: int = 256,
    seed: int = 0,
    n_actions: int = 2,
    bounds=None,
    weights=None,
):
    """Seeded (obs, actions, advantages), uniform actions; Pong-like frame differences for Pong.
    The gaussian head's (N, d) actions are sampled, ``mu + sigma * eps`` of the policy of
    ``weights``, and kept as sampled, beyond the env's bounds too; without ``weights``,
    ``mid + half * eps`` of the ``bounds`` (``[-1, 1]`` when None), a third beyond them."""
    rng = np.random.default_rng(seed)
    if cfg.env.id.startswith("ALE/"):
        obs = random_frame_differences(rng, n, obs_dim)
    else:
        obs = rng.standard_normal((n, obs_dim))
    dist = make_distribution(cfg.policy.head, n_actions)
    if dist.action_shape:
        eps = rng.standard_normal((n, *dist.action_shape))
        if weights is not None:
            w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
            actions = dist.sample(nn.head_forward(dist, w, obs)[1], eps)
        else:
            low, high = (-1.0, 1.0) if bounds is None else bounds
            actions = np.add(high, low) / 2 + np.subtract(high, low) / 2 * eps
    else:
        uniform = dist.probs(dist.logits(np.zeros((n, dist.n_outputs))))
        actions = dist.sample(uniform, rng.random(n)).astype(np.int64)
    return obs, actions, rng.standard_normal(n)


def action_bounds(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The ``(low, high)`` bounds (d,) of the config's env's Box actions."""
    from pgrl.build import env_spaces

    space = env_spaces(cfg)[1]
    return np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)


def gaussian_weights(weights: dict, obs, bounds) -> dict:
    """``weights`` of a gaussian head's policy that pushes against the env's ``bounds``: the last
    layer scaled until ``max |mu| = REACH * max |bound|`` on ``obs``, so that some sampled
    actions lie beyond the bounds, and ``log_std`` spread from ``init - 0.5`` to ``init + 0.5``
    (``init - 0.5`` for d = 1): at ``sigma = 1`` a gradient taken with respect to ``sigma``
    instead of ``log sigma`` is the same number, and dimensions alike hide a swapped pair."""
    n = nn.n_layers(weights)
    mu = nn.forward({k: np.asarray(v, np.float64) for k, v in weights.items()}, obs)[1]
    scale = REACH * float(np.max(np.abs(bounds))) / max(float(np.max(np.abs(mu))), 1e-12)
    out = {k: v * scale if k in (f"W{n}", f"b{n}") else v for k, v in weights.items()}
    log_std = weights["log_std"]
    d = len(log_std)
    offsets = np.linspace(-LOG_STD_SPREAD, LOG_STD_SPREAD, d) if d > 1 else [-LOG_STD_SPREAD]
    return {**out, "log_std": (log_std + offsets).astype(log_std.dtype)}


def _rel(a, b) -> tuple[float, float]:
    diff = float(np.max(np.abs(a - b))) if np.size(a) else 0.0
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(b)))) if np.size(a) else 0.0
    return diff, (diff / scale if scale > 0 else 0.0)


def _vs(x: dict, layer: str | None = None) -> tuple[float, float]:
    """(abs, rel) difference of ``x["numpy"]`` and ``x["tensorflow"]``: arrays, one ``layer`` of
    dicts of them, or the worst layer."""
    a, b = x["numpy"], x["tensorflow"]
    if layer is not None:
        return _rel(a[layer], b[layer])
    if not isinstance(a, dict):
        return _rel(a, b)
    return tuple(map(max, zip(*(_rel(a[k], b[k]) for k in a), strict=True)))


def _steps(nets: dict, weights: dict, grads: dict) -> dict:
    """Per backend, ``after - weights`` of one step with the same ``grads``."""
    out = {}
    for b, net in nets.items():
        net.set_weights(weights)
        net.apply_gradients(grads)
        out[b] = {k: v - weights[k] for k, v in net.get_weights().items()}
    return out


def _with_dtype(cfg: Config, dtype: str = "float64") -> Config:
    out = copy.deepcopy(cfg)
    out.policy.dtype = dtype
    return out


def _fd_errors(
    net, weights, args, seed: int, rel_eps: float = 1e-5, sides: Callable | None = None
) -> dict[str, float]:
    """Per layer: max relative error of a float64 NumPy ``net.gradients(*args)`` vs fourth-order
    central differences of ``net.loss(*args)``, on entries whose probes leave every ReLU, and
    every other kink of the loss (``sides(net)``: a bool array, the side of each), on the same
    side (a difference across a kink measures the kink, not the gradient)."""
    weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    net.set_weights(weights)
    grads = net.gradients(*args)
    rng = np.random.default_rng(seed)
    errors = {}
    top = max(max(float(np.max(np.abs(g), initial=0.0)) for g in grads.values()), 1e-12)

    def probe(name, idx, w_i):
        probed = {k: v.copy() for k, v in weights.items()}
        probed[name][idx] = w_i
        net.set_weights(probed)
        hidden = nn.forward(net.params, args[0])[0][1:]  # the activations of the hidden layers
        return net.loss(*args), [h > 0 for h in hidden] + ([sides(net)] if sides else [])

    for name, g in grads.items():
        # entries that carry gradient (a Pong W1 row whose pixel never changed has none, and a
        # central difference there measures only round-off)
        candidates = np.flatnonzero(np.abs(g) > 1e-3 * np.max(np.abs(g)))
        if candidates.size == 0:
            candidates = np.arange(g.size)
        worst, checked = 0.0, 0
        # a layer the loss does not reach (the entropy's W for the gaussian head) is held to
        # the network's largest gradient: its finite differences are round-off of the loss
        scale = max(float(np.max(np.abs(g))), 1e-12) if np.any(g) else top
        for i in rng.permutation(candidates)[: 4 * FD_ENTRIES]:
            idx = np.unravel_index(i, g.shape)
            old = weights[name][idx]
            eps = rel_eps * max(1.0, abs(old))  # truncation ~eps^4, round-off ~1e-16 |L| / eps
            probes = [probe(name, idx, old + k * eps) for k in (2, 1, -1, -2)]
            masks = [np.concatenate([h.ravel() for h in m]) for _, m in probes]
            if any(np.any(m != masks[0]) for m in masks[1:]):
                continue
            l2, l1, m1, m2 = (loss for loss, _ in probes)
            fd = (-l2 + 8 * l1 - 8 * m1 + m2) / (12 * eps)  # the fourth-order central difference
            worst = max(worst, abs(fd - g[idx]) / max(abs(g[idx]), abs(fd), 1e-3 * scale))
            checked += 1
            if checked == FD_ENTRIES:
                break
        errors[name] = worst if checked else float("nan")
    net.set_weights(weights)
    return errors


def run_check(
    cfg: Config,
    obs_dim: int,
    explain: bool = False,
    seed: int = 0,
    n_actions: int = 2,
    bounds=None,
):
    """The report as (lines, passed); ``n_actions`` is the env's action count (the gaussian
    head's: its action dimension d), ``bounds`` its Box actions' ``(low, high)`` (the env's
    when None)."""
    tol = 1e-10 if cfg.policy.dtype == "float64" else 1e-5
    ppo = cfg.train.algorithm == "ppo"
    policies = {b: build_policy(cfg, obs_dim, b, n_actions) for b in BACKENDS}
    dist = policies["numpy"].distribution
    words = WORDS[dist.name]
    if dist.densities and bounds is None:
        bounds = action_bounds(cfg)
    weights = policies["numpy"].get_weights()
    n = max(256, 4 * cfg.ppo.minibatch_size) if ppo else 256  # PPO: four minibatches
    batch = synthetic_batch(cfg, obs_dim, n, seed, n_actions, bounds)
    if dist.densities:  # the same obs; actions sampled from the policy
        weights = gaussian_weights(weights, batch[0], bounds)
        batch = synthetic_batch(cfg, obs_dim, n, seed, n_actions, bounds, weights)
    policy_rows = parity_rows(policies, weights, batch, words.probs, tol)
    fd_net = build_policy(_with_dtype(cfg), obs_dim, "numpy", n_actions)
    fd = _fd_errors(fd_net, weights, batch, seed)
    policy_rows += [(f"finite diff. {name}", (float("nan"), err), 1e-6) for name, err in fd.items()]
    extra_rows = entropy_rows(cfg, obs_dim, weights, batch, seed, n_actions, tol)
    extra_rows += [clipped_row(cfg, obs_dim, weights, batch, n_actions, tol)]
    extra_rows += value_rows(cfg, obs_dim, batch, seed, tol)
    ppo_lines, surrogate = [], []
    if ppo:
        old = old_log_probs(fd_net, weights, batch, cfg.ppo.clip, seed)
        ppo_batch = (*batch, old, cfg.ppo.clip)
        surrogate = surrogate_rows(cfg, obs_dim, weights, ppo_batch, seed, n_actions, tol)
        ppo_lines = ["", ppo_header(fd_net, batch, old, cfg.ppo.clip), *_table(surrogate)]
    rows = policy_rows + extra_rows + surrogate
    failures = [label for label, (_, rel), limit in rows if not rel <= limit]
    p = cfg.policy
    lines = [
        f"pgrl check: {cfg.env.id}, obs {obs_dim}, hidden {p.hidden_sizes}, {p.dtype}, "
        f"reduction {p.reduction}, bias {p.bias}, {words.header.format(n=n_actions)}"
        f"batch {len(batch[1])} (seed {seed})",
        *gaussian_header(weights, batch[1], bounds),
        f"tolerance: relative {tol:g} between backends, 1e-6 against finite differences",
        "",
        f"{'quantity':22} {'max abs diff':>13} {'max rel diff':>13}  verdict",
        *_table(policy_rows),
        "",
        "The terms besides the policy's loss (all layers in one row):",
        *_table(extra_rows),
        *ppo_lines,
        "",
        f"FAIL: {', '.join(failures)} outside tolerance"
        if failures
        else "PASS: the backends agree",
    ]
    if explain:
        tf_policy = policies["tensorflow"]
        lines += ["", *explain_causes(cfg, obs_dim, weights, batch, n_actions, tf_policy)]
        if dist.densities:
            lines += ["", *explain_gaussian(cfg, weights, batch, n_actions, bounds)]
        if ppo:
            lines += ["", *explain_ppo(cfg, obs_dim, weights, batch, old, n_actions, seed)]
    return lines, not failures


def gaussian_header(weights: dict, actions, bounds) -> list[str]:
    """The gaussian head's lines under check's first: its log_std, and the actions beyond the
    env's bounds; none for the other heads."""
    if "log_std" not in weights:
        return []
    beyond = (actions < bounds[0]) | (actions > bounds[1])
    log_std = np.array2string(np.asarray(weights["log_std"]), precision=3, separator=", ")
    return [
        f"log_std {log_std} (init_log_std -{LOG_STD_SPREAD:g} .. +{LOG_STD_SPREAD:g}), max |mu| "
        f"{REACH:g} x the bounds; actions mu + sigma * N(0, 1), {np.mean(beyond):.0%} beyond",
    ]


def _table(rows) -> list[str]:
    """``(label, (abs, rel), limit)`` rows as report lines, with the verdict."""
    return [
        f"{label:22} {a:13.3e} {r:13.3e}  {'ok' if r <= limit else 'FAIL'}"
        for label, (a, r), limit in rows
    ]


def parity_rows(policies: dict, weights, batch, probs: str, tol: float) -> list:
    """Rows of the policy's ``probs``, gradients and one RMSprop step, NumPy vs TensorFlow."""
    for policy in policies.values():
        policy.set_weights(weights)
    p = {b: getattr(pol, probs)(batch[0]) for b, pol in policies.items()}
    g = {b: pol.gradients(*batch) for b, pol in policies.items()}
    step = _steps(policies, weights, g["numpy"])
    return [
        (probs, _vs(p), tol),
        *((f"gradient {k}", _vs(g, k), tol) for k in weights),
        *((f"RMSprop step {k}", _vs(step, k), tol) for k in weights),
    ]


def entropy_rows(cfg: Config, obs_dim: int, weights, batch, seed: int, n_actions: int, tol: float):
    """Rows of the entropy bonus's gradients alone (coefficient 0.01 when off), NumPy vs
    TensorFlow and vs finite differences."""
    obs, actions, advantages = batch
    cfg_h = copy.deepcopy(cfg)
    cfg_h.optimizer.entropy_coef = cfg.optimizer.entropy_coef or 0.01
    cfg_h.optimizer.max_grad_norm = None
    entropy_only = (obs, actions, np.zeros_like(advantages))
    nets = {b: build_policy(cfg_h, obs_dim, b, n_actions) for b in BACKENDS}
    # logits of order 1: at the near-zero logits of a fresh network the entropy is at its flat
    # maximum, its gradient ~0, and a finite difference would measure only round-off
    last = f"W{len(cfg.policy.hidden_sizes) + 1}"
    z = nets["numpy"].logits(obs)
    w_h = {**weights, last: weights[last] * (2.0 / max(float(np.max(np.abs(z))), 1e-12))}
    for net in nets.values():
        net.set_weights(w_h)
    g = {b: net.gradients(*entropy_only) for b, net in nets.items()}
    # a step of 1e-4: the entropy's curvature is mild at logits of order 1, and its sum over the
    # batch is large against its gradient, so round-off, not truncation, bounds the difference
    fd_net = build_policy(_with_dtype(cfg_h), obs_dim, "numpy", n_actions)
    fd = _fd_errors(fd_net, w_h, entropy_only, seed, 1e-4)
    return [
        ("entropy bonus grads", _vs(g), tol),
        ("entropy finite diff.", (float("nan"), max(fd.values())), 1e-6),
    ]


def clipped_row(cfg: Config, obs_dim: int, weights, batch, n_actions: int, tol: float):
    """The row of a step with the NumPy gradients clipped (to half their norm when off)."""
    policy = build_policy(cfg, obs_dim, "numpy", n_actions)
    policy.set_weights(weights)
    grads = policy.gradients(*batch)
    norm = float(np.sqrt(sum(np.sum(np.square(v, dtype=np.float64)) for v in grads.values())))
    cfg_c = copy.deepcopy(cfg)
    c = cfg_c.optimizer.max_grad_norm = cfg.optimizer.max_grad_norm or 0.5 * norm
    nets = {b: build_policy(cfg_c, obs_dim, b, n_actions) for b in BACKENDS}
    return f"clipped step (c={c:.3g})", _vs(_steps(nets, weights, grads)), tol


def old_log_probs(fd_net, weights, batch, clip: float, seed: int) -> np.ndarray:
    """(N,) old log-probs a step away from ``weights``' policy: ``log rho ~ N(0, (1.5 clip)^2)``,
    so that about half of the ratios fall outside ``[1 - clip, 1 + clip]``; at most 0 but for
    densities."""
    fd_net.set_weights({k: np.asarray(v, np.float64) for k, v in weights.items()})
    log_probs = fd_net.log_probs(*batch[:2])
    noise = np.random.default_rng(seed + 3).normal(0.0, OUTSIDE * clip, len(log_probs))
    return _at_most_zero(fd_net.distribution, log_probs - noise)


def _at_most_zero(dist, log_probs: np.ndarray) -> np.ndarray:
    """Log-probabilities capped at 0; log-densities (the gaussian head's) as they are."""
    return log_probs if dist.densities else np.minimum(log_probs, 0.0)


def _ratio_sides(net, obs, actions, advantages, old, clip) -> np.ndarray:
    """(N,) where PPO's unclipped term is the smaller: the side of each kink of its min."""
    rho = np.exp(net.log_probs(obs, actions) - old)
    return rho * advantages <= np.clip(rho, 1 - clip, 1 + clip) * advantages


def ppo_header(fd_net, batch, old, clip: float) -> str:
    """The PPO section's heading: how many ratios fall outside the clip range, how many clip."""
    rho = np.exp(fd_net.log_probs(*batch[:2]) - old)
    outside = float(np.mean(np.abs(rho - 1) > clip))
    clipped = 1 - float(np.mean(_ratio_sides(fd_net, *batch, old, clip)))
    return (
        f"PPO's clipped surrogate, clip {clip:g}: {outside:.0%} of the ratios outside "
        f"[{1 - clip:g}, {1 + clip:g}],\n"
        f"{clipped:.0%} clipped (zero gradient); all layers in one row:"
    )


def surrogate_rows(
    cfg: Config, obs_dim: int, weights, batch, seed: int, n_actions: int, tol: float
) -> list:
    """Rows of PPO's clipped surrogate (with the config's entropy bonus and reduction) on
    ``batch`` = (obs, actions, advantages, old_log_probs, clip), NumPy vs TensorFlow and vs
    finite differences."""
    nets = {b: build_policy(cfg, obs_dim, b, n_actions) for b in BACKENDS}
    for net in nets.values():
        net.set_weights(weights)
    g = {b: net.gradients(*batch) for b, net in nets.items()}
    fd_net = build_policy(_with_dtype(cfg), obs_dim, "numpy", n_actions)
    fd = _fd_errors(fd_net, weights, batch, seed, sides=lambda net: _ratio_sides(net, *batch))
    return [
        ("PPO surrogate grads", _vs(g), tol),
        ("PPO finite diff.", (float("nan"), max(fd.values())), 1e-6),
    ]


def value_rows(cfg: Config, obs_dim: int, batch, seed: int, tol: float) -> list:
    """Rows of the value network on synthetic returns, NumPy vs TensorFlow and vs finite diff;
    with PPO's ``clip_value``, also of the clipped fit, with about half of the values farther
    than the clip from their old ones."""
    obs = batch[0]
    returns = np.random.default_rng(seed + 1).standard_normal(len(obs))
    values = {b: build_value_net(cfg, obs_dim, b) for b in BACKENDS}
    w_v = values["numpy"].get_weights()
    rng = np.random.default_rng(seed + 2)
    for name in w_v:  # biases off zero: no pre-activation of an empty frame on the ReLU's kink
        if name.startswith("b"):
            w_v[name] = rng.normal(0.0, 0.1, w_v[name].shape).astype(w_v[name].dtype)
    for net in values.values():
        net.set_weights(w_v)
    v = {b: net.predict(obs) for b, net in values.items()}
    g = {b: net.gradients(obs, returns) for b, net in values.items()}
    # between ReLU kinks the squared error is quadratic in each weight, so a central difference
    # has no truncation error: a 10x larger step only cuts the round-off
    fd_net = build_value_net(_with_dtype(cfg), obs_dim, "numpy")
    fd = _fd_errors(fd_net, w_v, (obs, returns), seed, 1e-4)
    rows = [
        ("value V(s)", _vs(v), tol),
        ("value gradients", _vs(g), tol),
        ("value RMSprop step", _vs(_steps(values, w_v, g["numpy"])), tol),
        ("value finite diff.", (float("nan"), np.nanmax(list(fd.values()))), 1e-6),
    ]
    c = cfg.ppo.clip_value if cfg.train.algorithm == "ppo" else None
    if c is None:
        return rows
    noise = np.random.default_rng(seed + 4).normal(0.0, OUTSIDE * c, len(returns))
    args = (obs, returns, v["numpy"].astype(np.float64) + noise, c)
    g = {b: net.gradients(*args) for b, net in values.items()}

    def sides(net):  # the kinks of the max of the two squares, and of the clip
        fit = net.predict(obs)
        moved = args[2] + np.clip(fit - args[2], -c, c)
        plain_wins = np.square(fit - returns) >= np.square(moved - returns)
        return np.concatenate([plain_wins, np.abs(fit - args[2]) < c])

    fd = _fd_errors(fd_net, w_v, args, seed, 1e-4, sides)
    return rows + [
        ("clipped V gradients", _vs(g), tol),
        ("clipped V finite diff.", (float("nan"), np.nanmax(list(fd.values()))), 1e-6),
    ]


class FirstUpdate:
    """The config's network (float64 weights, computed in ``dtype``) on one batch, and its first
    update from any ``dlogp`` or ``dL/dz``."""

    def __init__(self, dist, weights: dict, batch, per_step: float, optimizer: RMSprop, dtype=None):
        obs, actions, self.advantages = batch
        self.dist, self.weights, self.optimizer = dist, weights, optimizer
        self.dtype = np.dtype(dtype or np.float64)
        kind = self.dtype if dist.densities else np.int64
        self.actions, self.per_step = np.asarray(actions, kind), per_step
        self.net = {k: v.astype(self.dtype) for k, v in weights.items()}
        self.hs, self.out = nn.head_forward(dist, self.net, np.asarray(obs, self.dtype))
        self.z = dist.logits(self.out)

    def gradients(self, dlogp=None, strict_mask: bool = False) -> dict:
        """``dL/dW`` through ``dlogp`` (the head's own when None)."""
        dz = dlogits(self.dist, self.z, self.actions, self.advantages, dlogp)
        return self.backward(dz, strict_mask)

    def backward(self, dz: np.ndarray, strict_mask: bool = False) -> dict:
        """``dL/dW`` from ``dL/dz`` (shaped as ``z``), with the reduction's factor."""
        dz = dz.astype(self.dtype) * self.per_step
        return nn.head_backward(self.dist, self.net, self.hs, dz, strict_mask)

    def step(self, grads: dict, causes=()) -> np.ndarray:
        """RMSprop's first step (in float64) with the optimizer ``causes``, as one vector."""
        grads = {k: np.asarray(v, np.float64) for k, v in grads.items()}
        s = rmsprop_step(self.weights, grads, self.optimizer, causes)
        return np.concatenate([s[k].ravel() for k in self.weights])

    def saturated(self) -> FirstUpdate:
        """The same with the last layer scaled until ``max |z| = SATURATED``."""
        return self.scaled(SATURATED)

    def scaled(self, size: float, dtype=None, statistic=np.max) -> FirstUpdate:
        """The same (in ``dtype``, this one's when None) with the last layer scaled until
        ``statistic(|z|) = size``."""
        n = len(self.hs)
        scale = size / max(float(statistic(np.abs(self.z))), 1e-300)
        w = {k: v * scale if k in (f"W{n}", f"b{n}") else v for k, v in self.weights.items()}
        batch = (self.hs[0], self.actions, self.advantages)
        return FirstUpdate(self.dist, w, batch, self.per_step, self.optimizer, dtype or self.dtype)


def _change(variant, reference) -> float:
    return float(np.linalg.norm(variant - reference) / np.linalg.norm(reference))


def explain_causes(
    cfg: Config, obs_dim: int, weights, batch, n_actions: int = 2, tf_policy=None
) -> list[str]:
    """How much each classic mistake would change this config's first update: float64 passes of
    :mod:`pgrl.nn`, held to ``tf_policy``'s gradients, which also gives the float32 row."""
    o, p = cfg.optimizer, cfg.policy
    dist = make_distribution(p.head, n_actions)
    words = WORDS[dist.name]
    opt = RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt)
    w, n = {k: np.asarray(v, np.float64) for k, v in weights.items()}, len(batch[1])
    first = FirstUpdate(dist, w, batch, 1.0 / n if p.reduction == "mean" else 1.0, opt)
    correct = first.gradients()
    reference, tiny = first.step(correct), {k: v * 1e-6 for k, v in correct.items()}
    other = "mean" if p.reduction == "sum" else "sum"
    rescaled = {k: v * (n if other == "sum" else 1 / n) for k, v in correct.items()}
    unmasked = first.gradients(strict_mask=True)
    eps = "outside" if o.epsilon_inside_sqrt else "inside"
    variants = []  # (label, the variant's step, the step it is compared with)
    if words.probability:  # a head of logits
        logit = first.gradients(logit_mistake(dist, first.z, first.actions))
        variants.append((f"1 logit instead of {words.dlogits}", first.step(logit), reference))
    variants += [
        (f"2 epsilon {eps} the sqrt", first.step(correct, ("epsilon",)), reference),
        ("2 ... with gradients 1e-6 as large", first.step(tiny, ("epsilon",)), first.step(tiny)),
        (f"3 reduction '{other}'", first.step(rescaled), reference),
        ("4 ReLU mask h < 0 (masks nothing)", first.step(unmasked), reference),
    ]
    lines = []
    if tf_policy is not None:
        # the float64 pass that every row uses, against the TensorFlow backend's gradients
        tf_policy.set_weights(weights)
        tf_grads = tf_policy.gradients(*batch)
        agree = max(_rel(correct[k], tf_grads[k])[1] for k in w)
        float32 = _float32_step(cfg, tf_policy, w, batch)
        variants.append(("5 float32 instead of float64", float32, reference))
        lines.append(f"(the variants' float64 pass gives TensorFlow's gradients to {agree:.1e})")
    lr32 = first.step(correct, ("lr_float32",))
    variants.append(("7 Keras's float32 learning rate", lr32, reference))
    rows = [(label, _change(variant, ref)) for label, variant, ref in variants]
    naive_rows, finite = [], True
    if words.naive:
        naive_rows, finite = naive_log_rows(first, words, reference, batch, tf_policy)
    return [
        "How much each usual cause of NumPy/TF disagreement would change this config's",
        "first update (|step_variant - step| / |step|, RMSprop from zero state), for",
        f"{words.title.format(n=n_actions)}:",
        "",
        *(f"  {label:44} {value:10.3g}" for label, value in rows + naive_rows),
        "",
        *(f"  {line}" for line in lines),
        *explain_notes(words.stable, finite),
    ]


def explain_gaussian(cfg: Config, weights, batch, n_actions: int, bounds) -> list[str]:
    """How much each of the gaussian head's porting mistakes (:data:`pgrl.diagnose.
    GAUSSIAN_CAUSES`) would change this config's gradients, its ``log_std`` gradient alone, and
    its first update (float64 passes of :mod:`pgrl.nn`, REINFORCE's ``dL/dlogp = -A``)."""
    o, p = cfg.optimizer, cfg.policy
    dist = make_distribution(p.head, n_actions)
    opt = RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt)
    w, n, d = {k: np.asarray(v, np.float64) for k, v in weights.items()}, len(batch[1]), n_actions
    per_step = 1.0 / n if p.reduction == "mean" else 1.0
    first = FirstUpdate(dist, w, batch, per_step, opt)
    init = np.full(d, float(p.init_log_std))
    at_init = FirstUpdate(dist, {**w, "log_std": init}, batch, per_step, opt)
    variants = [  # (label, the update, the causes)
        ("a dL/dsigma in place of dL/dlog_std", first, ("std",)),
        (f"a ... at init_log_std = {p.init_log_std:g}", at_init, ("std",)),
        ("b log pi without its -log sigma term", first, ("log_sigma",)),
        (f"c log pi averaged over the d = {d} dims", first, ("dim_mean",)),
        ("d log pi of clip(a, low, high), not of a", first, ("clipped",)),
    ]
    rows = [(label, gaussian_figures(u, causes, bounds)) for label, u, causes in variants]
    beyond = (batch[1] < bounds[0]) | (batch[1] > bounds[1])
    sigma = np.exp(w["log_std"])
    sigma = f"{sigma[0]:.3g}" if d == 1 else f"{np.min(sigma):.3g} .. {np.max(sigma):.3g}"
    return [
        "How much each of the gaussian head's porting mistakes would change this config's",
        "gradients (all, and log_std's alone) and first update on the same batch:",
        "|x_variant - x| / |x|, RMSprop from zero state, REINFORCE's dL/dlogp = -A:",
        "",
        f"  {'':44} {'gradients':>10} {'log_std':>10} {'step':>10}",
        *(f"  {label:44} {g:10.3g} {s:10.3g} {u:10.3g}" for label, (g, s, u) in rows),
        "",
        f"  a: log_std's gradient divided by sigma = {sigma}: none where sigma = 1.",
        "  b: d log pi / d log_std is ((a - mu) / sigma)^2 - 1; without the term, ... - 0.",
        f"  c: every gradient divided by d{' (none for d = 1)' if d == 1 else ''}.",
        f"  d: differs where a lies beyond the bounds: {np.mean(np.any(beyond, axis=1)):.0%} of "
        f"the actions ({np.mean(beyond):.0%} of the entries).",
        "  RMSprop's first step divides each gradient by its own size: a gradient scaled",
        "  per parameter (a, c) hardly moves it; the learning rate it stands for does.",
    ]


def gaussian_figures(first: FirstUpdate, causes, bounds) -> tuple[float, float, float]:
    """The relative change of all gradients, of ``log_std``'s and of the first step that the
    gaussian head's ``causes`` make."""
    dlogp = port_log_prob(first.dist, first.z, first.actions, causes, bounds)[1]
    variant, correct = first.gradients(dlogp), first.gradients()

    def flat(g: dict) -> np.ndarray:
        return np.concatenate([g[k].ravel() for k in first.weights])

    return (
        _change(flat(variant), flat(correct)),
        _change(variant["log_std"], correct["log_std"]),
        _change(first.step(variant), first.step(correct)),
    )


def naive_dlog_prob(dist, naive_probs: Callable, z: np.ndarray, a) -> np.ndarray:
    """``d log p_a / dz`` as autodiff takes it through ``p = naive_probs(z)``:
    ``(1 / p_a) * p_a (onehot(a) - p)``, NaN where ``exp`` overflows or ``p_a`` underflows."""
    p = naive_probs(z)
    p_a = dist.action_probs(p)[np.arange(len(a)), a].reshape(-1, *[1] * (p.ndim - 1))
    return (1.0 / p_a) * (p_a * (dist.onehot(a) - p))


def naive_log_rows(first: FirstUpdate, words: HeadWords, reference, batch, tf_policy):
    """The rows of a naive ``log(p)`` at this batch's and at saturated logits, and whether pgrl's
    backends stay finite at the latter."""
    sat = first.saturated()
    reference_sat = sat.step(sat.gradients())
    with np.errstate(all="ignore"):
        changes = [
            _change(
                u.step(u.gradients(naive_dlog_prob(u.dist, words.naive_probs, u.z, u.actions))), ref
            )
            for u, ref in ((first, reference), (sat, reference_sat))
        ]
    rows = [
        (f"  {words.naive}", changes[0]),
        (f"  ... at logits scaled to max |z| = {SATURATED:g}", changes[1]),
    ]
    finite = bool(np.all(np.isfinite(reference_sat)))
    if tf_policy is not None:
        tf_policy.set_weights({k: v.astype(tf_policy.dtype) for k, v in sat.weights.items()})
        saturated = tf_policy.gradients(*batch)
        finite &= all(bool(np.all(np.isfinite(g))) for g in saturated.values())
    return rows, finite


def _float32_step(cfg: Config, tf_policy, weights, batch) -> np.ndarray:
    """The first update of the TensorFlow backend in float32, as one float64 vector."""
    policy = build_policy(
        _with_dtype(cfg, "float32"), tf_policy.obs_dim, "tensorflow", tf_policy.n_actions
    )
    w32 = {k: v.astype(np.float32) for k, v in weights.items()}
    policy.set_weights(w32)
    policy.apply_gradients(policy.gradients(*batch))
    after = policy.get_weights()
    return np.concatenate([(after[k].astype(np.float64) - w32[k]).ravel() for k in weights])


def explain_notes(stable: str, finite: bool) -> list[str]:
    """What the rows above mean, and the cause they leave out (the returns); ``stable``: what
    the head's log rows compare with ("": no log rows)."""
    log_rows = [
        "  log rows: the gradient autodiff takes through log(p), p computed naively;",
        "     nan is a NaN update. At those logits pgrl's backends "
        + ("stay finite" if finite else "are NOT finite")
        + ":",
        f"     {stable}.",
    ]
    return [
        "",
        "  4: the finite-difference rows above catch it (pgrl masks h <= 0).",
        "  5: pgrl's TensorFlow backend in float32, same weights and batch; compare the",
        "     tolerance line above for this config's dtype.",
        "  7: Keras keeps a float learning rate in float32 (pgrl's KerasRMSprop keeps it",
        "     in float64); the error compounds over updates.",
        *(log_rows if stable else []),
        "  6 returns: Pong's reset at each point and per-episode standardization are",
        "    config keys (train.reset_on_nonzero, train.standardize); std 0 gives zeros.",
    ]


def explain_ppo(cfg: Config, obs_dim: int, weights, batch, old, n_actions: int, seed: int):
    """How much each PPO porting pitfall would change the first minibatch's update (a, b, c:
    passes of :mod:`pgrl.nn` on the batch with ``old`` log-probs) or the batch's whole update
    (d: pgrl's NumPy policy through the config's epochs, from the batch's own policy)."""
    p, o = cfg.ppo, cfg.optimizer
    dist = make_distribution(cfg.policy.head, n_actions)
    opt = RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt)
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    obs, actions, advantages = batch
    idx = np.sort(np.random.default_rng([seed, 2]).permutation(len(actions))[: p.minibatch_size])
    per_step = 1.0 / len(idx) if cfg.policy.reduction == "mean" else 1.0

    def minibatch(adv, dtype=None) -> FirstUpdate:
        return FirstUpdate(dist, w, (obs[idx], actions[idx], adv), per_step, opt, dtype)

    adv = standardize(advantages[idx]) if p.normalize_advantages else advantages[idx]
    first = minibatch(adv)
    # at other logit scales (and dtypes) the same ratios: old log-probs as far from the new ones
    log_rho = dist.log_prob(first.z, first.actions) - old[idx]

    def old_of(u: FirstUpdate) -> np.ndarray:
        return _at_most_zero(dist, dist.log_prob(u.z.astype(np.float64), u.actions) - log_rho)

    def step(u: FirstUpdate, causes=()) -> np.ndarray:
        dz = ppo_dlogits(dist, u.z, u.actions, u.advantages, old_of(u), p.clip, causes)
        return u.step(u.backward(dz))

    def change(u: FirstUpdate, causes) -> float:
        with np.errstate(all="ignore"):  # NaN where probabilities underflow: the row says nan
            return _change(step(u, causes), step(u))

    densities = dist.densities
    # logits scaled up (a confident policy); the gaussian head's densities at this batch
    rounded = minibatch(adv, np.float32)
    if not densities:
        rounded = rounded.scaled(ROUNDED32, np.float32, np.median)
    with np.errstate(all="ignore"):
        rho, rho_probs = (
            ppo_ratio(dist, rounded.z, rounded.actions, old_of(rounded), c)[0]
            for c in ((), ("ratio",))
        )
        worst = float(np.max(np.abs(rho_probs / rho - 1)))
    a_rows = [
        ("a ratio pi/pi_old, not exp(logp - logp_old)", change(first, ("ratio",))),
        ("a ... in float32", change(minibatch(adv, np.float32), ("ratio",))),
    ]
    if not densities:
        a_rows += [
            (f"a ... float32, median |z| = {ROUNDED32:g}", change(rounded, ("ratio",))),
            ("a ... there, the worst ratio's relative error", worst),
            (f"a ... float64, max |z| = {SATURATED:g}", change(first.saturated(), ("ratio",))),
        ]
    else:
        a_rows.append(("a ... float32, the worst ratio's rel. error", worst))
    rows = [*a_rows, ("b min before the sign: -max(rho A, clip A)", change(first, ("max",)))]
    if p.normalize_advantages:
        whole = minibatch(standardize(advantages)[idx])
        rows.append(("c advantages standardized per batch", _change(step(whole), step(first))))
    correct, mistaken = (
        ppo_drift(cfg, obs_dim, n_actions, w, batch, seed, m) for m in (False, True)
    )
    rows += [
        (f"d approx. KL after {p.epochs} epochs", correct["approx_kl"]),
        ("d ... KL, old log-probs recomputed per epoch", mistaken["approx_kl"]),
        (f"d max |rho - 1| after {p.epochs} epochs", correct["max_ratio_change"]),
        ("d ... |rho - 1|, recomputed per epoch", mistaken["max_ratio_change"]),
    ]
    n_mb = -(-len(actions) // p.minibatch_size)
    return [
        "How much each PPO porting pitfall would change the update on the same batch and",
        f"old log-probs (clip {p.clip:g}, {n_mb} minibatches of {p.minibatch_size} steps, the "
        "first as pgrl draws it):",
        "a, b, c: |step_variant - step| / |step| of the first minibatch's step; d: how far",
        f"the {p.epochs} epochs of the whole update move the policy from the batch's:",
        "",
        *(f"  {label:44} {value:10.3g}" for label, value in rows),
        "",
        *ppo_notes(a_rows[0][1], p.normalize_advantages, densities),
    ]


def ppo_drift(cfg: Config, obs_dim: int, n_actions: int, weights, batch, seed: int, mistake):
    """How far the config's PPO epochs on ``batch`` move pgrl's NumPy policy (float64) from
    ``weights``, the batch's policy: ``approx_kl`` and ``max_ratio_change`` (max |rho - 1|) of
    :func:`pgrl.objectives.ppo_stats`' ratio; ``mistake``: the old log-probs recomputed at the
    start of every epoch instead of once."""
    p = cfg.ppo
    policy = build_policy(_with_dtype(cfg), obs_dim, "numpy", n_actions)
    policy.set_weights(weights)
    obs, actions, advantages = batch
    batch_log_probs = old = policy.log_probs(obs, actions)
    order = np.random.default_rng([seed, 2])
    epochs, stopped = 0, False
    while epochs < p.epochs and not stopped:
        epochs += 1
        if mistake:
            old = policy.log_probs(obs, actions)
        permutation = order.permutation(len(actions))
        for i in range(0, len(actions), p.minibatch_size):
            idx = np.sort(permutation[i : i + p.minibatch_size])
            adv = standardize(advantages[idx]) if p.normalize_advantages else advantages[idx]
            stats = policy.update(obs[idx], actions[idx], adv, old[idx], p.clip)
            stopped = p.target_kl is not None and stats["approx_kl"] > p.target_kl
            if stopped:
                break
    log_probs = policy.log_probs(obs, actions)
    rho = np.exp(log_probs - batch_log_probs)
    return {
        "approx_kl": objectives.ppo_stats(log_probs, batch_log_probs, p.clip)["approx_kl"],
        "max_ratio_change": float(np.max(np.abs(rho - 1))),
    }


def ppo_notes(a_float64: float, normalized: bool, densities: bool = False) -> list[str]:
    """What the PPO rows mean; ``a_float64``: the first row's figure; ``densities``: the
    gaussian head's ratio of densities."""
    at_batch = "no difference at this batch but round-off" if a_float64 < 1e-12 else "see above"
    c = (
        ["  c: pgrl standardizes each minibatch's advantages (ppo.normalize_advantages)."]
        if normalized
        else ["  c: ppo.normalize_advantages is off: no minibatch is standardized."]
    )
    rounding = [
        "     pi / pi_old is exp(logp - logp_old) until a probability rounds: float32's",
        "     1 - sigmoid(z) has relative error ~6e-8 / (1 - p), and is 0 above z ~ 16.6",
        "     (the ratio 0); in float64 both probabilities underflow to 0 below",
        "     log pi ~ -745 (0 / 0: nan).",
    ]
    if densities:
        rounding = [
            "     a ratio of densities exp(logp) / exp(logp_old) rounds each one: in float32",
            "     they underflow to 0 below log pi ~ -103 and overflow above ~89 (0 / 0 and",
            "     inf / inf: nan); in float64 below ~ -745 and above ~710.",
        ]
    return [
        f"  a: in float64, {at_batch}.",
        *rounding,
        "  b: -max lets the gradient through the larger term: the clip stops nothing, and",
        "     where the ratio is clipped the step still pushes it further out.",
        *c,
        "  d: recomputed at each epoch's start, every ratio starts at 1: the clip bounds",
        "     one epoch's move from the previous epoch's policy, not the update's from the",
        "     batch's (approx. KL: mean (rho - 1) - log rho, as pgrl logs it).",
    ]
