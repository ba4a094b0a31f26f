"""``pgrl check CONFIG``: do the two backends compute the same thing for this config's network?

Builds both backends with identical weights, feeds one seeded synthetic batch, and reports per
layer the largest difference of forward probabilities, gradients and one RMSprop step, plus the
NumPy gradient's error against central finite differences (float64); then the same for the value
network (the ``[value]`` section), the entropy bonus's gradients alone, and an RMSprop step with
its gradients clipped by global norm. ``--explain`` adds, for the
same batch, how much each classic porting mistake (DESIGN.md), or its analogue for the
categorical head (the logits in place of ``softmax(z)``, a softmax without max shift), would
change the first update.
"""

from __future__ import annotations

import copy

import numpy as np

from pgrl import nn
from pgrl.config import Config
from pgrl.optim import RMSprop
from pgrl.reinforce import build_policy, build_value_net
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
    return _fd_errors(policy, weights, batch, seed)


def _fd_errors(net, weights, args, seed: int, rel_eps: float = 1e-5) -> dict[str, float]:
    """Per layer: max relative error of ``net.gradients(*args)`` (a float64 NumPy network) vs
    fourth-order central differences of ``net.loss(*args)`` (step ``rel_eps * max(1, |w|)``), on
    a sample of entries whose probes leave every ReLU on the same side of its kink (a difference
    across a kink measures the kink, not the gradient)."""
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
            masks = [m for _, m in probes]
            if any(np.any(a != b) for m in masks[1:] for a, b in zip(masks[0], m, strict=True)):
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
    lines += ["", "The terms besides the policy's loss (all layers in one row):"]
    for label, diffs, limit in extra_terms(cfg, obs_dim, weights, batch, seed, n_actions, tol):
        row(label, *diffs, limit)
    passed = not failures
    lines += [
        "",
        "PASS: the backends agree" if passed else f"FAIL: {', '.join(failures)} outside tolerance",
    ]
    if explain:
        lines += [""] + explain_causes(
            cfg, obs_dim, weights, batch, n_actions, policies["tensorflow"]
        )
    return lines, passed


def _worst(pairs) -> tuple[float, float]:
    """The largest (abs, rel) difference over layers: ``pairs`` of (a, b) arrays."""
    diffs = [_rel(a, b) for a, b in pairs]
    return max(d[0] for d in diffs), max(d[1] for d in diffs)


def extra_terms(cfg: Config, obs_dim: int, weights, batch, seed: int, n_actions: int, tol: float):
    """``(label, (abs, rel), limit)`` rows for the value network (its ``V(s)``, gradients and
    RMSprop step, NumPy vs TensorFlow, and NumPy vs finite differences), the entropy bonus's
    gradients alone (advantages 0; coefficient ``optimizer.entropy_coef``, or 0.01 when off) and
    a step whose gradients are clipped (``optimizer.max_grad_norm``, or half their norm when
    off), each NumPy vs TensorFlow."""
    obs, actions, advantages = batch
    backends = ("numpy", "tensorflow")
    rows = []
    # the entropy term alone, with finite differences of the float64 NumPy loss
    cfg_h = copy.deepcopy(cfg)
    cfg_h.optimizer.entropy_coef = cfg.optimizer.entropy_coef or 0.01
    cfg_h.optimizer.max_grad_norm = None
    entropy_only = (obs, actions, np.zeros_like(advantages))
    nets = {b: build_policy(cfg_h, obs_dim, b, n_actions) for b in backends}
    # logits of order 1: at the near-zero logits of a fresh network the entropy is at its flat
    # maximum, its gradient ~0, and a finite difference would measure only round-off
    last = f"W{len(cfg.policy.hidden_sizes) + 1}"
    z = nets["numpy"].logits(obs)
    w_h = {**weights, last: weights[last] * (2.0 / max(float(np.max(np.abs(z))), 1e-12))}
    g = {}
    for b, net in nets.items():
        net.set_weights(w_h)
        g[b] = net.gradients(*entropy_only)
    rows.append(
        (
            "entropy bonus grads",
            _worst((g["numpy"][k], g["tensorflow"][k]) for k in g["numpy"]),
            tol,
        )
    )
    cfg_h.policy.dtype = "float64"
    # a step of 1e-4: the entropy's curvature is mild at logits of order 1, and its sum over the
    # batch is large against its gradient, so round-off, not truncation, bounds the difference
    fd = _fd_errors(build_policy(cfg_h, obs_dim, "numpy", n_actions), w_h, entropy_only, seed, 1e-4)
    rows.append(("entropy finite diff.", (float("nan"), max(fd.values())), 1e-6))
    # a clipped step: both backends get the NumPy policy gradients of the batch
    cfg_c = copy.deepcopy(cfg)
    grads = build_policy(cfg, obs_dim, "numpy", n_actions)
    grads.set_weights(weights)
    grads = grads.gradients(obs, actions, advantages)
    norm = float(np.sqrt(sum(np.sum(np.square(v, dtype=np.float64)) for v in grads.values())))
    cfg_c.optimizer.max_grad_norm = cfg.optimizer.max_grad_norm or 0.5 * norm
    stepped = {}
    for b in backends:
        net = build_policy(cfg_c, obs_dim, b, n_actions)
        net.set_weights(weights)
        net.apply_gradients(grads)
        stepped[b] = net.get_weights()
    steps = (
        (stepped["numpy"][k] - weights[k], stepped["tensorflow"][k] - weights[k]) for k in weights
    )
    rows.append((f"clipped step (c={cfg_c.optimizer.max_grad_norm:.3g})", _worst(steps), tol))
    # the value network, fit to synthetic returns
    returns = np.random.default_rng(seed + 1).standard_normal(len(advantages))
    values = {b: build_value_net(cfg, obs_dim, b) for b in backends}
    w_v = values["numpy"].get_weights()
    rng = np.random.default_rng(seed + 2)
    for name in w_v:  # biases off zero: no pre-activation of an empty frame on the ReLU's kink
        if name.startswith("b"):
            w_v[name] = rng.normal(0.0, 0.1, w_v[name].shape).astype(w_v[name].dtype)
    for net in values.values():
        net.set_weights(w_v)
    v = {b: net.predict(obs) for b, net in values.items()}
    g = {b: net.gradients(obs, returns) for b, net in values.items()}
    for net in values.values():
        net.apply_gradients(g["numpy"])
    stepped = {b: net.get_weights() for b, net in values.items()}
    rows += [
        ("value V(s)", _rel(v["numpy"], v["tensorflow"]), tol),
        ("value gradients", _worst((g["numpy"][k], g["tensorflow"][k]) for k in w_v), tol),
        (
            "value RMSprop step",
            _worst((stepped["numpy"][k] - w_v[k], stepped["tensorflow"][k] - w_v[k]) for k in w_v),
            tol,
        ),
    ]
    cfg64 = copy.deepcopy(cfg)
    cfg64.policy.dtype = "float64"
    # between ReLU kinks the squared error is quadratic in each weight, so a central difference
    # has no truncation error: a 10x larger step only cuts the round-off
    fd = _fd_errors(build_value_net(cfg64, obs_dim, "numpy"), w_v, (obs, returns), seed, 1e-4)
    fd = {k: e for k, e in fd.items() if not np.isnan(e)}
    rows.append(("value finite diff.", (float("nan"), max(fd.values())), 1e-6))
    return rows


def explain_causes(
    cfg: Config, obs_dim: int, weights, batch, n_actions: int = 2, tf_policy=None
) -> list[str]:
    """How much each classic mistake, or its categorical analogue, would change this config's
    first update.

    Every variant is pgrl.diagnose's float64 forward and backward pass with the mistake's
    ``dL/dz`` (or ReLU mask), then one RMSprop step from zero state; ``tf_policy`` (the
    TensorFlow backend, with the config's network) is the reference that pass is held to, and
    gives the float32 row.
    """
    from pgrl.diagnose import HEADS, backward, forward, rmsprop_step

    obs, actions, advantages = batch
    o, p = cfg.optimizer, cfg.policy
    categorical = p.head == "categorical"
    head = HEADS[p.head]
    opt = RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt)
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    x = np.asarray(obs, np.float64)
    a = np.asarray(actions, np.int64 if categorical else np.float64)
    n = len(a)
    per_step = 1.0 / n if p.reduction == "mean" else 1.0
    hs, z = forward(w, x)
    last = f"W{len(hs)}"

    def grads(dlogits, weights=w, strict_mask=False, scale=per_step):
        return backward(weights, hs, advantages[:, None] * dlogits * scale, strict_mask)

    def step(g, causes=(), weights=w):
        s = rmsprop_step(weights, g, opt, causes)
        return np.concatenate([s[k].ravel() for k in weights])

    def change(variant, reference):
        return float(np.linalg.norm(variant - reference) / np.linalg.norm(reference))

    correct = grads(head.dlogits(z, a, False))
    reference = step(correct)
    tiny = {k: v * 1e-6 for k, v in correct.items()}
    other_reduction = "mean" if p.reduction == "sum" else "sum"
    probability = "softmax(z) - onehot(a)" if categorical else "sigmoid(logit) - y"
    rows = [
        (
            f"1 logit instead of {probability}",
            change(step(grads(head.dlogits(z, a, True))), reference),
        ),
        (
            f"2 epsilon {'outside' if o.epsilon_inside_sqrt else 'inside'} the sqrt",
            change(step(correct, ("epsilon",)), reference),
        ),
        ("2 ... with gradients 1e-6 as large", change(step(tiny, ("epsilon",)), step(tiny))),
        (
            f"3 reduction '{other_reduction}'",
            change(
                step({k: v * (n if p.reduction == "mean" else 1 / n) for k, v in correct.items()}),
                reference,
            ),
        ),
        (
            "4 ReLU mask h < 0 (masks nothing)",
            change(step(grads(head.dlogits(z, a, False), strict_mask=True)), reference),
        ),
    ]
    lines = []
    if tf_policy is not None:
        # the float64 pass that every row uses, against the TensorFlow backend's gradients
        tf_policy.set_weights(weights)
        tf_grads = tf_policy.gradients(obs, actions, advantages)
        agree = max(_rel(correct[k], tf_grads[k])[1] for k in w)
        rows.append(
            (
                "5 float32 instead of float64",
                change(_float32_step(cfg, tf_policy, w, batch), reference),
            )
        )
        lines.append(f"(the variants' float64 pass gives TensorFlow's gradients to {agree:.1e})")
    rows.append(
        ("7 Keras's float32 learning rate", change(step(correct, ("lr_float32",)), reference))
    )

    # a naive log(p): the gradient autodiff takes through log of p computed without the stable
    # form, at this batch's logits and with the last layer scaled until max |z| = 1000
    scale = SATURATED / max(float(np.max(np.abs(z))), 1e-300)
    w_sat = {k: v * scale if k in (last, f"b{len(hs)}") else v for k, v in w.items()}
    z_sat = z * scale
    reference_sat = step(grads(head.dlogits(z_sat, a, False), w_sat), weights=w_sat)
    with np.errstate(all="ignore"):
        naive = step(grads(_naive_log_dlogits(z, a, categorical)))
        naive_sat = step(grads(_naive_log_dlogits(z_sat, a, categorical), w_sat), weights=w_sat)
    rows += [
        (
            "  log of a softmax without max shift"
            if categorical
            else "  log of sigmoid(z) = 1 / (1 + exp(-z))",
            change(naive, reference),
        ),
        (f"  ... at logits scaled to max |z| = {SATURATED:g}", change(naive_sat, reference_sat)),
    ]
    finite = bool(np.all(np.isfinite(reference_sat)))
    if tf_policy is not None:
        tf_policy.set_weights({k: v.astype(weights[k].dtype) for k, v in w_sat.items()})
        saturated = tf_policy.gradients(obs, actions, advantages)
        finite &= all(bool(np.all(np.isfinite(g))) for g in saturated.values())
        tf_policy.set_weights(weights)
    what = f"the categorical head, {n_actions} actions" if categorical else "the Bernoulli head"
    out = [
        "How much each usual cause of NumPy/TF disagreement would change this config's",
        "first update (|step_variant - step| / |step|, RMSprop from zero state), for",
        f"{what}:",
        "",
    ]
    out += [f"  {label:44} {value:10.3g}" for label, value in rows]
    return out + [""] + [f"  {line}" for line in lines] + explain_notes(categorical, finite)


SATURATED = 1000.0  # max |logit| of the saturated rows: exp overflows float64 above ~709.8


def _naive_log_dlogits(z, actions, categorical: bool) -> np.ndarray:
    """(N, k) ``d(-log p_a)/dz`` as autodiff takes it through a naively computed ``p``:
    ``-(1 / p_a) * dp_a/dz`` with ``p = exp(z) / sum exp(z)`` (no max shift) or
    ``p = 1 / (1 + exp(-z))``. NaN where ``exp`` overflows or ``p_a`` underflows to 0."""
    if categorical:
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        rows = np.arange(len(actions))
        onehot = np.zeros_like(z)
        onehot[rows, actions] = 1.0
        p_a = p[rows, actions][:, None]
        return -(1.0 / p_a) * (p_a * (onehot - p))
    p = 1.0 / (1.0 + np.exp(-z[:, 0]))
    p_a = np.where(actions == 1, p, 1.0 - p)
    dp_a = np.where(actions == 1, 1.0, -1.0) * p * (1.0 - p)
    return (-(1.0 / p_a) * dp_a)[:, None]


def _float32_step(cfg: Config, tf_policy, weights, batch) -> np.ndarray:
    """The first update of the TensorFlow backend in float32, as one float64 vector."""
    cfg32 = copy.deepcopy(cfg)
    cfg32.policy.dtype = "float32"
    policy = build_policy(cfg32, tf_policy.obs_dim, "tensorflow", tf_policy.n_actions)
    w32 = {k: v.astype(np.float32) for k, v in weights.items()}
    policy.set_weights(w32)
    policy.apply_gradients(policy.gradients(*batch))
    after = policy.get_weights()
    return np.concatenate([(after[k].astype(np.float64) - w32[k]).ravel() for k in weights])


def explain_notes(categorical: bool, finite: bool) -> list[str]:
    """What the rows above mean, and the cause they leave out (the returns)."""
    stable = (
        "max-shifted log_softmax and sparse_softmax_cross_entropy_with_logits"
        if categorical
        else "softplus forms and sigmoid_cross_entropy_with_logits"
    )
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
