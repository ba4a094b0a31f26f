"""``pgrl check CONFIG``: do the two backends compute the same thing for this config's network?

Builds both backends with identical weights, feeds one seeded synthetic batch, and reports per
layer the largest difference of forward probabilities, gradients and one RMSprop step, plus the
NumPy gradient's error against central finite differences (float64); then the same for the value
network, the entropy bonus's gradients alone, and an RMSprop step with clipped gradients.
``--explain`` adds how much each classic porting mistake (DESIGN.md), or its categorical
analogue, would change the first update on the same batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from pgrl import nn
from pgrl.build import build_policy, build_value_net
from pgrl.config import Config
from pgrl.diagnose import WORDS, HeadWords, dlogits, logit_mistake, rmsprop_step
from pgrl.distributions import make_distribution
from pgrl.optim import RMSprop
from pgrl.sparse import random_frame_differences
from pgrl.validate import BACKENDS

FD_ENTRIES = 12  # finite-difference checks per layer (all entries when the layer is smaller)
SATURATED = 1000.0  # max |logit| of the saturated rows: exp overflows float64 above ~709.8


def synthetic_batch(cfg: Config, obs_dim: int, n: int = 256, seed: int = 0, n_actions: int = 2):
    """Seeded (obs, actions, advantages), uniform actions; Pong-like frame differences for Pong."""
    rng = np.random.default_rng(seed)
    if cfg.env.id.startswith("ALE/"):
        obs = random_frame_differences(rng, n, obs_dim)
    else:
        obs = rng.standard_normal((n, obs_dim))
    dist = make_distribution(cfg.policy.head, n_actions)
    uniform = dist.probs(dist.logits(np.zeros((n, dist.n_outputs))))
    actions = dist.sample(uniform, rng.random(n)).astype(np.int64)
    return obs, actions, rng.standard_normal(n)


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


def _fd_errors(net, weights, args, seed: int, rel_eps: float = 1e-5) -> dict[str, float]:
    """Per layer: max relative error of a float64 NumPy ``net.gradients(*args)`` vs fourth-order
    central differences of ``net.loss(*args)``, on entries whose probes leave every ReLU on the
    same side of its kink (a difference across a kink measures the kink, not the gradient)."""
    weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    net.set_weights(weights)
    grads = net.gradients(*args)
    rng = np.random.default_rng(seed)
    errors = {}

    def probe(name, idx, w_i):
        probed = {k: v.copy() for k, v in weights.items()}
        probed[name][idx] = w_i
        net.set_weights(probed)
        hidden = nn.forward(net.params, args[0])[0][1:]  # the activations of the hidden layers
        return net.loss(*args), [h > 0 for h in hidden]

    for name, g in grads.items():
        # entries that carry gradient (a Pong W1 row whose pixel never changed has none, and a
        # central difference there measures only round-off)
        candidates = np.flatnonzero(np.abs(g) > 1e-3 * np.max(np.abs(g)))
        if candidates.size == 0:
            candidates = np.arange(g.size)
        worst, checked = 0.0, 0
        scale = max(float(np.max(np.abs(g))), 1e-12)
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


def run_check(cfg: Config, obs_dim: int, explain: bool = False, seed: int = 0, n_actions: int = 2):
    """The report as (lines, passed); ``n_actions`` is the env's action count."""
    tol = 1e-10 if cfg.policy.dtype == "float64" else 1e-5
    policies = {b: build_policy(cfg, obs_dim, b, n_actions) for b in BACKENDS}
    weights = policies["numpy"].get_weights()
    batch = synthetic_batch(cfg, obs_dim, seed=seed, n_actions=n_actions)
    words = WORDS[policies["numpy"].distribution.name]
    policy_rows = parity_rows(policies, weights, batch, words.probs, tol)
    fd_net = build_policy(_with_dtype(cfg), obs_dim, "numpy", n_actions)
    fd = _fd_errors(fd_net, weights, batch, seed)
    policy_rows += [(f"finite diff. {name}", (float("nan"), err), 1e-6) for name, err in fd.items()]
    extra_rows = entropy_rows(cfg, obs_dim, weights, batch, seed, n_actions, tol)
    extra_rows += [clipped_row(cfg, obs_dim, weights, batch, n_actions, tol)]
    extra_rows += value_rows(cfg, obs_dim, batch, seed, tol)
    failures = [label for label, (_, rel), limit in policy_rows + extra_rows if not rel <= limit]
    p = cfg.policy
    lines = [
        f"pgrl check: {cfg.env.id}, obs {obs_dim}, hidden {p.hidden_sizes}, {p.dtype}, "
        f"reduction {p.reduction}, bias {p.bias}, {words.header.format(n=n_actions)}"
        f"batch {len(batch[1])} (seed {seed})",
        f"tolerance: relative {tol:g} between backends, 1e-6 against finite differences",
        "",
        f"{'quantity':22} {'max abs diff':>13} {'max rel diff':>13}  verdict",
        *_table(policy_rows),
        "",
        "The terms besides the policy's loss (all layers in one row):",
        *_table(extra_rows),
        "",
        f"FAIL: {', '.join(failures)} outside tolerance"
        if failures
        else "PASS: the backends agree",
    ]
    if explain:
        lines += [
            "",
            *explain_causes(cfg, obs_dim, weights, batch, n_actions, policies["tensorflow"]),
        ]
    return lines, not failures


def _table(rows) -> list[str]:
    """``(label, (abs, rel), limit)`` rows as report lines, with the verdict."""
    return [
        f"{label:22} {a:13.3e} {r:13.3e}  {'ok' if r <= limit else 'FAIL'}"
        for label, (a, r), limit in rows
    ]


def parity_rows(policies: dict, weights, batch, probs: str, tol: float) -> list:
    """Rows of the policy's ``probs``, gradients and one RMSprop step, NumPy vs TensorFlow."""
    policies["tensorflow"].set_weights(weights)
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


def value_rows(cfg: Config, obs_dim: int, batch, seed: int, tol: float) -> list:
    """Rows of the value network on synthetic returns, NumPy vs TensorFlow and vs finite diff."""
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
    return [
        ("value V(s)", _vs(v), tol),
        ("value gradients", _vs(g), tol),
        ("value RMSprop step", _vs(_steps(values, w_v, g["numpy"])), tol),
        ("value finite diff.", (float("nan"), np.nanmax(list(fd.values()))), 1e-6),
    ]


class FirstUpdate:
    """The config's network in float64 on one batch, and its first update from any ``dlogp``."""

    def __init__(self, dist, weights: dict, batch, per_step: float, optimizer: RMSprop):
        obs, actions, self.advantages = batch
        self.dist, self.weights, self.optimizer = dist, weights, optimizer
        self.actions, self.per_step = np.asarray(actions, np.int64), per_step
        self.hs, self.out = nn.forward(weights, np.asarray(obs, np.float64))
        self.z = dist.logits(self.out)

    def gradients(self, dlogp=None, strict_mask: bool = False) -> dict:
        """``dL/dW`` through ``dlogp`` (the head's own when None)."""
        dz = dlogits(self.dist, self.z, self.actions, self.advantages, dlogp)
        dout = dz.reshape(self.out.shape) * self.per_step
        return nn.backward(self.weights, self.hs, dout, strict_mask)

    def step(self, grads: dict, causes=()) -> np.ndarray:
        """RMSprop's first step with the optimizer ``causes``, as one vector."""
        s = rmsprop_step(self.weights, grads, self.optimizer, causes)
        return np.concatenate([s[k].ravel() for k in self.weights])

    def saturated(self) -> FirstUpdate:
        """The same with the last layer scaled until ``max |z| = SATURATED``."""
        n = len(self.hs)
        scale = SATURATED / max(float(np.max(np.abs(self.z))), 1e-300)
        w = {k: v * scale if k in (f"W{n}", f"b{n}") else v for k, v in self.weights.items()}
        batch = (self.hs[0], self.actions, self.advantages)
        return FirstUpdate(self.dist, w, batch, self.per_step, self.optimizer)


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
    logit = first.gradients(logit_mistake(dist, first.z, first.actions))
    unmasked = first.gradients(strict_mask=True)
    eps = "outside" if o.epsilon_inside_sqrt else "inside"
    variants = [  # (label, the variant's step, the step it is compared with)
        (f"1 logit instead of {words.dlogits}", first.step(logit), reference),
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
    """What the rows above mean, and the cause they leave out (the returns)."""
    return [
        "",
        "  4: the finite-difference rows above catch it (pgrl masks h <= 0).",
        "  5: pgrl's TensorFlow backend in float32, same weights and batch; compare the",
        "     tolerance line above for this config's dtype.",
        "  7: Keras keeps a float learning rate in float32 (pgrl's KerasRMSprop keeps it",
        "     in float64); the error compounds over updates.",
        "  log rows: the gradient autodiff takes through log(p), p computed naively;",
        "     nan is a NaN update. At those logits pgrl's backends "
        + ("stay finite" if finite else "are NOT finite")
        + ":",
        f"     {stable}.",
        "  6 returns: Pong's reset at each point and per-episode standardization are",
        "    config keys (train.reset_on_nonzero, train.standardize); std 0 gives zeros.",
    ]
