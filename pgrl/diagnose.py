"""``pgrl diagnose``: which known porting mistake explains a user's gradients and RMSprop step?

pgrl computes the correct gradients (and RMSprop step) for the user's batch with :mod:`pgrl.nn`
and the head's distribution, and every variant that one or two known mistakes (DESIGN.md's list)
would produce, and names the variant the user's numbers match. The step is predicted from the
user's own gradients, so a wrong gradient and a wrong optimizer are each named as such. A batch
with PPO's old log-probs is read as one minibatch of PPO's clipped surrogate, and two of PPO's
porting mistakes join the list; weights with a ``log_std`` are the gaussian head's, whose own four
(:data:`GAUSSIAN_CAUSES`) join it. Sign, head and file formats: :func:`explain` and
docs/diagnose.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgrl import nn, objectives
from pgrl.checkpoint import ZIP_ERRORS, CheckpointError, check_npz_members
from pgrl.config import PPOConfig
from pgrl.distributions import DISTRIBUTIONS, HEADS, make_distribution
from pgrl.optim import RMSprop
from pgrl.returns import compute_advantages
from pgrl.sparse import SparseRows, is_mostly_zero
from pgrl.validate import REDUCTIONS, STANDARDIZE, cut

TOL64 = 1e-10  # float64 round-off in a different order of operations, relative to the layer
TOL32 = 1e-3  # float32 round-off, ditto
NEAR = 10.0  # candidates within this factor of the best fit count as equally good
EXIT_CODES = {"correct": 0, "known": 1, "unknown": 3}

# --set keys that describe what the user meant (the network itself comes from the weights)
SETTINGS = (
    "optimizer.learning_rate",
    "optimizer.decay",
    "optimizer.epsilon",
    "optimizer.epsilon_inside_sqrt",
    "policy.head",
    "policy.reduction",
    "ppo.clip",
    "train.gamma",
    "train.reset_on_nonzero",
    "train.standardize",
)


class InputError(ValueError):
    """Input that cannot be diagnosed (a missing array, a shape that does not fit, a pickle)."""


@dataclass(frozen=True)
class HeadWords:
    """How the reports speak of one head (its mathematics is :mod:`pgrl.distributions`'), and how
    a naive port computes its probabilities; ``{h}``: H_last, ``{n}``: n_actions, ``{last}``: n - 1.
    """

    loss: str  # the per-step loss
    probability: str  # what dL/dz takes of the logits, for "logit used in place of ..."
    dlogits: str  # dL/dz in words
    outputs: str  # the last layer the head needs
    actions: str  # the actions it takes
    probs: str  # the policy method (and check's row) of the head's probabilities
    title: str  # the head in check's --explain
    naive: str = ""  # the probabilities computed naively, for check's row ("": no such row)
    naive_probs: Callable | None = None  # (N,) or (N, n) logits -> those, no guard on exp
    stable: str = ""  # what pgrl computes instead
    note: str = ""  # a report line naming the head
    header: str = ""  # the head in check's first line
    causes: tuple[str, ...] = ()  # the head's own mistakes, keys of GAUSSIAN_CAUSES


WORDS = {
    "bernoulli": HeadWords(
        loss="BCE",
        probability="sigmoid",
        dlogits="sigmoid(logit) - y",
        outputs="the Bernoulli head has one logit: ({h}, 1)",
        actions="0 or 1",
        probs="action_prob",
        title="the Bernoulli head",
        naive="log of sigmoid(z) = 1 / (1 + exp(-z))",
        naive_probs=lambda z: 1.0 / (1.0 + np.exp(-z)),
        stable="softplus forms and sigmoid_cross_entropy_with_logits",
    ),
    "categorical": HeadWords(
        loss="CE",
        probability="softmax",
        dlogits="softmax(z) - onehot(a)",
        outputs="the categorical head has one logit per action: ({h}, n), n >= 2",
        actions="integers 0 to {last} (one per logit)",
        probs="action_probs",
        title="the categorical head, {n} actions",
        naive="log of a softmax without max shift",
        naive_probs=lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
        stable="max-shifted log_softmax and sparse_softmax_cross_entropy_with_logits",
        note="head: categorical, {n} actions (softmax over the last W's columns)",
        header="categorical head, {n} actions, ",
    ),
    "gaussian": HeadWords(
        loss="NLL",
        probability="",  # no logits to take in place of probabilities
        dlogits="[(mu - a) / sigma^2 | 1 - ((a - mu) / sigma)^2]",
        outputs="the gaussian head has one mean per action dimension: ({h}, d), and log_std (d,)",
        actions="an (N, d) array of the sampled actions",
        probs="logits",
        title="the gaussian head, d = {n}",
        note="head: gaussian, d = {n} (mu from the last W's columns, log_std learned); "
        "NLL(a, z) = -log N(a; mu, sigma^2), z = [mu | log_std]",
        header="gaussian head, d = {n}, ",
        causes=("std", "log_sigma", "dim_mean", "clipped"),
    ),
}

# the gaussian head's porting mistakes (the batch's actions a are the sampled ones, unclipped)
GAUSSIAN_CAUSES = {
    "std": "dL/dsigma in place of dL/dlog_std (sigma learned directly)",
    "log_sigma": "log pi without its -log sigma term",
    "dim_mean": "log pi averaged over the action dimensions, not summed",
    "clipped": "log pi of the clipped action clip(a, low, high), not of a",
}


def head_of(w_last: np.ndarray, name: str, head: str | None = None, log_std=None):
    """The distribution a last layer (H_last, k) feeds: the gaussian head's with a ``log_std``
    (d,), else ``head``'s, or the first discrete head with k outputs."""
    k = w_last.shape[1]
    if log_std is not None or head == "gaussian":
        if head not in (None, "gaussian"):
            raise InputError(f"weights hold log_std, the gaussian head's; head is {head!r}")
        if log_std is None:
            raise InputError(
                "weights: missing log_std, the gaussian head's (d,) log standard deviations"
            )
        if log_std.shape != (k,):
            raise InputError(
                f"weights log_std has shape {log_std.shape}, but {name} gives {k} means: "
                f"expected ({k},)"
            )
        if k == 0:
            outputs = WORDS["gaussian"].outputs.format(h=w_last.shape[0])
            raise InputError(f"weights {name} has shape {w_last.shape}; {outputs}")
        return make_distribution("gaussian", k)
    for h in [head] if head else [h for h in HEADS if not DISTRIBUTIONS[h].densities]:
        try:  # a policy has at least two actions; a head with other than k outputs does not fit
            dist = make_distribution(h, max(k, 2))
        except ValueError:
            continue
        if dist.n_outputs == k:
            return dist
    # unnamed and fitting none (no columns): the head of n >= 2 outputs, the last, says what fits
    outputs = WORDS[head or "categorical"].outputs.format(h=w_last.shape[0])
    raise InputError(f"weights {name} has shape {w_last.shape}; {outputs}")


def gradient_causes(
    reduction: str,
    standardize: str,
    reset: bool,
    rewards: bool,
    probability: str,
    ppo=False,
    head_causes=(),
) -> dict:
    """Gradient mistakes that apply, ``{key: label}``; the logit's only for a head of logits
    (``probability``), returns variants only with rewards, PPO's (:func:`ppo_dlogits`) only
    with ``ppo``, and the keys ``head_causes`` of :data:`GAUSSIAN_CAUSES`."""
    causes = {"logit": f"logit used in place of {probability}"} if probability else {}
    causes |= {
        "reduction": "mean instead of sum" if reduction == "sum" else "sum instead of mean",
        "relu_mask": "ReLU mask h < 0 (masks nothing)",
        "sign": "missing minus sign: -dL/dW, the ascent direction",
    }
    if ppo:
        what = "densities" if not probability else "probabilities"
        causes["ratio"] = f"ratio pi / pi_old of {what}, not exp(logp - logp_old)"
        causes["max"] = "min taken before the sign: min(-rho A, -clip(rho) A)"
    causes |= {k: GAUSSIAN_CAUSES[k] for k in head_causes}
    if rewards:
        for mode in (m for m in STANDARDIZE if m != standardize):
            label = f"standardized per {mode}" if mode != "none" else "not standardized"
            instead = f" instead of per {standardize}" if "none" not in (mode, standardize) else ""
            causes[f"standardize_{mode}"] = f"returns {label}{instead}"
        causes["reset"] = (
            "discounted sum not reset at nonzero rewards"
            if reset
            else "discounted sum reset at every nonzero reward"
        )
    return causes


def step_causes(epsilon_inside_sqrt: bool) -> dict:
    """Optimizer mistakes, ``{key: label}``."""
    where = "outside" if epsilon_inside_sqrt else "inside"
    return {
        "epsilon": f"epsilon {where} the square root",
        "lr_float32": "Keras's float32 learning rate",
        "ascent": "missing minus sign in the step: it adds the gradient",
    }


def combinations(keys, up_to: int = 2) -> list[tuple[str, ...]]:
    """Every set of at most ``up_to`` causes, fewest first; one standardization mode at most,
    and not the logit with PPO's ratio of probabilities (which takes no ``d log pi / dz``)."""
    return [
        combo
        for k in range(up_to + 1)
        for combo in itertools.combinations(keys, k)
        if sum(c.startswith("standardize_") for c in combo) <= 1
        and not {"logit", "ratio"} <= set(combo)
    ]


def load_arrays(source, what: str) -> dict[str, np.ndarray]:
    """Arrays by name from a dict or an ``.npz`` file (never a pickle); ``what`` names it."""
    if isinstance(source, Mapping):
        return {str(k): np.asarray(v) for k, v in source.items()}
    path = Path(source)
    label = f"{what} {path}"
    if not path.exists():
        raise InputError(f"{label}: no such file")
    if not path.is_file():
        raise InputError(f"{label}: not a regular file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] != b"PK\x03\x04":  # .npz files are zip archives
        if head.startswith(b"\x93NUMPY"):
            problem = "is a single .npy array (np.save); write named arrays with np.savez"
        elif head[:1] == b"\x80":
            problem = "is a Python pickle; pgrl reads only .npz archives of plain arrays"
        else:
            problem = "is empty" if not head else "is not an .npz archive"
        raise InputError(f"{label}: {problem}")
    try:
        check_npz_members(path, f"{what} archive")  # before a header's shape is allocated
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except CheckpointError as e:
        if "object array" not in str(e):
            raise InputError(f"{what} {e}") from None
        problem = "holds object arrays, which need pickle; save numeric arrays"
        raise InputError(f"{label}: {problem}") from None
    except ZIP_ERRORS as e:
        problem = f"corrupt .npz archive ({e})"
        if "allow_pickle" in str(e):
            problem = "holds object arrays, which need pickle; save numeric arrays"
        raise InputError(f"{label}: {problem}") from None


def _listed(names: list[str], limit: int = 8) -> str:
    """``"a, b, c"``; past ``limit`` names, how many more (an archive may hold thousands)."""
    more = f" and {len(names) - limit:,} more" if len(names) > limit else ""
    return ", ".join(n if len(n) <= 40 else f"{n[:30]}..." for n in names[:limit]) + more


def _numeric(a: np.ndarray, label: str) -> np.ndarray:
    """``a`` as finite float64, or InputError naming ``label``."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{label} must be numeric, got dtype {a.dtype}")
    out = a.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise InputError(f"{label} contains NaN or inf")
    return out


def check_network(weights: dict, head: str | None = None) -> tuple[dict[str, np.ndarray], object]:
    """Weights ``W1..Wn`` (and any ``b_i``) that chain into an MLP, the gaussian head's
    ``log_std`` if any, and its head's distribution."""
    bad = sorted(
        k for k in weights if not re.fullmatch(r"[Wb][1-9][0-9]{0,5}", k) and k != "log_std"
    )
    if bad:
        raise InputError(
            f"weights: unexpected arrays {cut(bad)}; expected W1, W2, ... (b1, ..., log_std)"
        )
    weights = dict(weights)
    log_std = weights.pop("log_std", None)
    if log_std is not None:
        log_std = _numeric(np.asarray(log_std), "weights log_std")
    n = max((int(k[1:]) for k in weights if k[0] == "W"), default=0)
    # the first gaps only: a name like W99999999999 must not make a list of all the others
    missing = list(
        itertools.islice((f"W{i}" for i in range(1, max(n, 1) + 1) if f"W{i}" not in weights), 5)
    )
    if missing:
        more = " ..." if n - sum(k[0] == "W" for k in weights) > len(missing) else ""
        raise InputError(f"weights: missing {', '.join(missing)}{more}")
    stray = sorted(k for k in weights if k[0] == "b" and int(k[1:]) > n)
    if stray:
        raise InputError(f"weights: {_listed(stray)} without a matching W")
    out = {}
    for i in range(1, n + 1):
        w = _numeric(np.asarray(weights[f"W{i}"]), f"weights W{i}")
        if w.ndim != 2:
            hint = f"; save it as ({w.shape[0]}, 1), e.g. W{i}[:, None]" if w.ndim == 1 else ""
            raise InputError(f"weights W{i} must be 2-D (fan_in, fan_out), got {w.shape}{hint}")
        if i > 1 and w.shape[0] != out[f"W{i - 1}"].shape[1]:
            raise InputError(
                f"weights W{i} has shape {w.shape}, but W{i - 1} has {out[f'W{i - 1}'].shape[1]} "
                f"outputs: expected ({out[f'W{i - 1}'].shape[1]}, ...)"
            )
        out[f"W{i}"] = w
        if f"b{i}" in weights:
            b = _numeric(np.asarray(weights[f"b{i}"]), f"weights b{i}")
            if b.shape != (w.shape[1],):
                raise InputError(f"weights b{i} has shape {b.shape}, expected ({w.shape[1]},)")
            out[f"b{i}"] = b
    dist = head_of(out[f"W{n}"], f"W{n}", head, log_std)
    if log_std is not None:
        out["log_std"] = log_std
    return out, dist


def check_like(arrays: dict, weights: dict, what: str) -> dict[str, np.ndarray]:
    """``arrays`` with exactly the names and shapes of ``weights``, as float64."""
    missing = [k for k in weights if k not in arrays]
    extra = sorted(k for k in arrays if k not in weights)
    if missing or extra:
        parts = [f"missing {_listed(missing)}"] if missing else []
        parts += [f"unexpected {_listed(extra)}"] if extra else []
        raise InputError(f"{what}: {'; '.join(parts)} (weights hold {_listed(list(weights))})")
    out = {}
    for name, w in weights.items():
        a = _numeric(np.asarray(arrays[name]), f"{what} {name}")
        if a.shape != w.shape:
            hint = " (transposed?)" if a.shape == w.shape[::-1] and a.ndim == 2 else ""
            raise InputError(f"{what} {name} has shape {a.shape}, weights {w.shape}{hint}")
        out[name] = a
    return out


@dataclass
class Batch:
    """One batch: obs (N, D), actions (N,) (the gaussian head's (N, d)), and advantages (N,) or
    rewards with episode bounds; for PPO (one minibatch) also old log-probs (N,) and the clip,
    when the batch holds one; the gaussian head's action bounds (d,) each, when it holds them."""

    obs: np.ndarray | SparseRows
    actions: np.ndarray
    advantages: np.ndarray | None = None
    rewards: np.ndarray | None = None
    ep_bounds: np.ndarray | None = None  # (E + 1,) offsets of the episodes, with rewards
    old_log_probs: np.ndarray | None = None
    clip: float | None = None
    bounds: tuple[np.ndarray, np.ndarray] | None = None  # the env's (low, high)


def check_batch(batch: dict, w1_shape: tuple[int, int], dist) -> Batch:
    """The batch's arrays, checked against ``W1``'s shape (obs_dim, H1) and the head's ``dist``."""
    has_adv, ppo = "advantages" in batch, "old_log_probs" in batch
    if has_adv and ("rewards" in batch or "episode_ends" in batch):
        raise InputError(
            "batch: holds advantages and rewards; give one (rewards with episode_ends)"
        )
    if "clip" in batch and not ppo:
        raise InputError("batch: clip without old_log_probs; PPO's surrogate needs both")
    if ppo and not has_adv:
        raise InputError(
            "batch: old_log_probs need advantages (the minibatch's, as your update used them), "
            "not rewards"
        )
    expected = ["obs", "actions", *(["advantages"] if has_adv else ["rewards", "episode_ends"])]
    expected += ["old_log_probs"] if ppo else []
    missing = [k for k in expected if k not in batch]
    extra = sorted(k for k in batch if k not in [*expected, "clip", "low", "high"])
    if missing or extra:
        what = f"missing {_listed(missing)}" if missing else f"unexpected {_listed(extra)}"
        raise InputError(
            f"batch: {what}; expected obs, actions and advantages (or rewards and episode_ends)"
        )
    obs = np.asarray(batch["obs"])
    if obs.ndim != 2 or obs.shape[0] == 0:
        raise InputError(f"batch obs must have shape (N, {w1_shape[0]}), N >= 1, got {obs.shape}")
    if obs.shape[1] != w1_shape[0]:
        hint = " (W1 transposed? pgrl's W1 is (obs_dim, H1))" if obs.shape[1] == w1_shape[1] else ""
        raise InputError(
            f"batch obs has {obs.shape[1]} columns, but weights W1 takes {w1_shape[0]} inputs{hint}"
        )
    n = obs.shape[0]
    vectors = {}
    for key in expected[1:]:
        v = np.asarray(batch[key])
        if key == "actions" and dist.action_shape:
            if v.shape != (n, *dist.action_shape):
                raise InputError(
                    f"batch actions must have shape ({n}, {dist.n_outputs}), one row per obs "
                    f"and one column per mean, got {v.shape}"
                )
        elif v.shape != (n,):
            hint = f"; save {key}.ravel()" if v.size == n else ""
            if key == "actions" and v.shape == (n, dist.n_outputs) and dist.n_outputs > 1:
                hint = "; one-hot rows? save actions.argmax(axis=1)"
            if (
                key == "actions"
                and v.ndim == 2
                and v.dtype.kind == "f"
                and np.any(v != np.round(v))
            ):
                hint = "; continuous actions? the gaussian head's weights need its log_std"
            raise InputError(f"batch {key} must have shape ({n},) like obs, got {v.shape}{hint}")
        vectors[key] = v
    # Pong's frame differences: only the nonzeros enter the first layer
    x = SparseRows.from_dense(obs) if is_mostly_zero(obs) else _numeric(obs, "batch obs")
    actions = check_actions(vectors["actions"], dist)
    bounds = check_bounds(batch, dist)
    if has_adv:
        adv = _numeric(vectors["advantages"], "batch advantages")
        if not ppo:
            return Batch(x, actions, advantages=adv, bounds=bounds)
        old = check_old_log_probs(vectors["old_log_probs"], dist.densities)
        clip = check_clip(batch["clip"]) if "clip" in batch else None
        return Batch(x, actions, advantages=adv, old_log_probs=old, clip=clip, bounds=bounds)
    ends = _numeric(vectors["episode_ends"], "batch episode_ends")
    if not np.all((ends == 0) | (ends == 1)) or ends[-1] != 1:
        raise InputError(
            "batch episode_ends must be 0/1 flags marking each episode's last step, "
            "the batch's last step included"
        )
    ep_bounds = np.concatenate([[0], np.flatnonzero(ends) + 1])
    rewards = _numeric(vectors["rewards"], "batch rewards")
    return Batch(x, actions, rewards=rewards, ep_bounds=ep_bounds, bounds=bounds)


def check_bounds(batch: dict, dist) -> tuple[np.ndarray, np.ndarray] | None:
    """The gaussian head's action bounds ``(low, high)``, (d,) each (one number stands for every
    dimension), from the batch's ``low`` and ``high``; None when it holds neither."""
    given = [k for k in ("low", "high") if k in batch]
    if not given:
        return None
    if not dist.densities:
        raise InputError(
            f"batch {given[0]}: action bounds are the gaussian head's; this is the {dist.name} head"
        )
    if len(given) == 1:
        raise InputError(
            f"batch: {given[0]} without {({'low', 'high'} - set(given)).pop()}; "
            "give both action bounds"
        )
    d, out = dist.n_outputs, []
    for key in given:
        v = np.asarray(batch[key])
        if v.shape not in ((), (1,), (d,)):
            raise InputError(f"batch {key} must have shape ({d},) like an action, got {v.shape}")
        out.append(np.broadcast_to(_numeric(v, f"batch {key}"), (d,)).copy())
    low, high = out
    if np.any(low >= high):
        raise InputError(f"batch low must be below high, got low {low} and high {high}")
    return low, high


def check_old_log_probs(old: np.ndarray, densities: bool = False) -> np.ndarray:
    """(N,) log-probabilities as float64 (log-densities, of any sign, with ``densities``), or
    InputError (probabilities saved instead?)."""
    old = _numeric(old, "batch old_log_probs")
    if not densities and np.any(old > 0):
        hint = "; probabilities? save np.log(p)" if np.all((old > 0) & (old <= 1)) else ""
        raise InputError(
            f"batch old_log_probs must be log-probabilities, <= 0, got {old[old > 0][:3]}{hint}"
        )
    return old


def check_clip(clip) -> float:
    """PPO's clip range ``eps``, one number in (0, 1), or InputError."""
    c = np.asarray(clip)
    if c.size != 1 or c.dtype.kind not in "biuf" or not 0 < float(c.ravel()[0]) < 1:
        shown = c.tolist() if c.size <= 3 else f"an array of shape {c.shape}"
        raise InputError(f"batch clip must be one number in (0, 1), PPO's eps, got {shown}")
    return float(c.ravel()[0])


def check_actions(actions: np.ndarray, dist) -> np.ndarray:
    """(N,) actions of ``dist``'s head as int64 indices (the gaussian head's (N, d) as float64),
    or InputError quoting bad ones."""
    if dist.densities:
        return _numeric(actions, "batch actions")
    expected = WORDS[dist.name].actions.format(last=dist.n_actions - 1)
    if actions.dtype.kind not in "biuf":
        raise InputError(f"batch actions must be {expected}, got dtype {actions.dtype}")
    if dist.check_actions(actions) is not None:
        bad = actions[~np.isin(actions, np.arange(dist.n_actions))][:3]
        raise InputError(f"batch actions must be {expected}, got {bad.tolist()}")
    return actions.astype(np.int64)


def _layer_error(user: np.ndarray, pred: np.ndarray, ulp=None) -> float:
    """Largest difference relative to the layer's largest value, inf for NaN; a difference
    within ``ulp``, the spacing of the user's numbers, is their last bit."""
    diff = np.abs(user - pred) if ulp is None else np.maximum(np.abs(user - pred) - ulp, 0.0)
    worst = float(np.max(diff, initial=0.0))
    if worst == 0.0:
        return 0.0
    scale = max(float(np.max(np.abs(user), initial=0.0)), float(np.max(np.abs(pred), initial=0.0)))
    error = worst / scale if scale > 0 else np.inf
    return float(np.inf) if np.isnan(error) else float(error)


@dataclass
class Candidate:
    """One set of causes, the numbers they predict, and how far the user's are from them."""

    causes: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    errors: dict[str, float]  # per layer

    @property
    def error(self) -> float:
        return max(self.errors.values())


@dataclass
class Part:
    """The diagnosis of the gradients or of the step: every candidate, and the one that fits."""

    name: str  # "gradients" or "step"
    labels: dict[str, str]  # cause key -> label
    candidates: list[Candidate]  # the first is pgrl's correct math (no cause)
    user: dict[str, np.ndarray]  # the user's numbers; for the step, after - W as candidates'
    excused: set[str] = field(default_factory=set)  # causes that cancel out (the gist's signs)
    hint: str = ""  # what else would fit, when nothing known does

    def __post_init__(self):
        """The best fit: the closest, and the fewest causes among equal fits."""
        best_error = min(c.error for c in self.candidates)
        self.matched, self.float32, self.ties = best_error <= TOL32, False, []
        if not self.matched:
            self.best = min(self.candidates, key=lambda c: (c.error, len(c.causes)))
            return
        near = [c for c in self.candidates if c.error <= max(NEAR * best_error, TOL64)]
        self.best = min(near, key=lambda c: (len(c.causes), c.error))
        self.float32 = self.best.error > TOL64
        n = len(self.best.causes)
        self.ties = [c.causes for c in near if len(c.causes) == n and c is not self.best]

    @property
    def blind(self) -> list[str]:
        """Causes that, added to the match, fit as well: this batch cannot rule them out."""
        if not self.matched:
            return []
        limit = max(NEAR * self.best.error, TOL64)
        have = set(self.best.causes)
        supersets = [c for c in self.candidates if c.error <= limit and have < set(c.causes)]
        extra = [set(c.causes) - have for c in supersets]
        return [self.labels[e.pop()] for e in extra if len(e) == 1]

    @property
    def correct(self) -> Candidate:
        return self.candidates[0]

    @property
    def named(self) -> list[str]:
        """Labels of the best fit's causes, but those that cancel out."""
        return [self.labels[c] for c in self.best.causes if c not in self.excused]

    @property
    def causes(self) -> list[str]:
        """Labels of the matched causes, float32 precision included; [] when correct."""
        if not self.matched:
            return []
        return self.named + ["float32 precision"] if self.float32 else self.named

    @property
    def status(self) -> str:
        """``correct``, ``known`` (causes explain the numbers) or ``unknown``."""
        if not self.matched:
            return "unknown"
        return "known" if self.causes else "correct"

    def summary(self) -> str:
        """The matched causes, the part and the fit: ``"mean instead of sum (gradients, ...)"``."""
        fit = f"rel. error {self.best.error:.2g}"
        if not self.named:
            return f"float32 precision ({self.name}, {fit})"
        precision = "float32 precision, " if self.float32 else ""
        return f"{' + '.join(self.named)} ({self.name}, {precision}{fit})"

    def describe(self, causes: tuple[str, ...]) -> str:
        return " + ".join(self.labels[c] for c in causes) or "pgrl's correct math"


@dataclass
class Diagnosis:
    """What :func:`explain` found; ``exit_code``: 0 correct, 1 known causes, 3 none; ``lines()``."""

    gradients: Part
    step: Part | None
    head: str  # the name of the head the numbers were read with
    notes: list[str] = field(default_factory=list)
    loss: str = ""  # L in words; REINFORCE's for the head when empty

    @property
    def parts(self) -> list[Part]:
        return [p for p in (self.gradients, self.step) if p is not None]

    @property
    def status(self) -> str:
        """``correct``, ``known`` or ``unknown``: the worst of the parts."""
        return max((p.status for p in self.parts), key=EXIT_CODES.get)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def verdict(self) -> str:
        """One line: correct, the known causes, or where the numbers differ most."""
        parts = self.parts
        if self.status == "correct":
            what = " and ".join("RMSprop step" if p.name == "step" else p.name for p in parts)
            error = max(p.best.error for p in parts)
            return f"correct: your {what} match pgrl's mathematics (rel. error {error:.2g})"
        known = [p.summary() for p in parts if p.status == "known"]
        unknown = [p for p in parts if p.status == "unknown"]
        if not unknown:
            n = len({label for p in parts for label in p.causes})
            return f"known cause{'s' if n > 1 else ''}: " + "; ".join(known)
        texts = []
        for p in unknown:
            errors = p.correct.errors
            layer = max(errors, key=lambda k: (errors[k], k))
            closest = ""
            if p.best.causes:
                closest = f"; closest: {p.describe(p.best.causes)}, rel. error {p.best.error:.2g}"
            verb = "differ" if p.name == "gradients" else "differs"
            texts.append(
                f"your {p.name} {verb} from pgrl's most in {layer} "
                f"(rel. error {errors[layer]:.2g}{closest})" + (f"; {p.hint}" if p.hint else "")
            )
        return "no known cause: " + "; ".join(texts + known)

    def lines(self) -> list[str]:
        """The report: the verdict, a per-layer table, what "match" stands for, notes."""
        width = max(14, *(len(k) + 10 for k in self.gradients.user))  # "gradient log_std"
        header = f"{'':{width}}{'shape':>14}{'max|yours|':>12}{'max|pgrl|':>12}{'vs pgrl':>10}"
        out = [self.verdict, "", header + f"{'vs match':>10}"]
        for p in self.parts:
            for k, user in p.user.items():
                ref = p.correct.arrays[k]
                out.append(
                    f"{('gradient ' if p.name == 'gradients' else 'step ') + k:{width}}"
                    f"{str(user.shape):>14}{np.max(np.abs(user)):>12.4g}"
                    f"{np.max(np.abs(ref)):>12.4g}{p.correct.errors[k]:>10.2g}"
                    f"{p.best.errors[k]:>10.2g}"
                )
        out.append("")
        for p in self.parts:
            what = "match" if p.matched else "closest"
            line = f"{p.name}: {what} = {p.describe(p.best.causes)}"
            if p.float32:
                line += ", to float32 precision"
            if p.ties:
                line += "; as close: " + ", ".join(p.describe(t) for t in p.ties)
            out.append(line)
            if p.blind:
                out.append(f"{p.name}: this batch cannot rule out " + ", ".join(p.blind))
        if self.step is not None:
            out.append("step: pgrl's RMSprop step from your gradients, its state starting at zero")
        loss = self.loss or f"sum_t A_t * {WORDS[self.head].loss}(a_t, z_t)"
        return out + [
            *self.notes,
            f"sign: pgrl's gradients are dL/dW, L = {loss}, the direction to descend",
            "  (Karpathy's gist's grad is the ascent direction -dL/dW: save -grad)",
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def explain(
    weights,
    batch,
    grads,
    after=None,
    *,
    optimizer: RMSprop | None = None,
    reduction: str = "sum",
    gamma: float = 0.99,
    reset_on_nonzero: bool = False,
    standardize: str = "episode",
    head: str | None = None,
    clip: float | None = None,
) -> Diagnosis:
    """Which known mistake, if any, explains a user's gradients (and step) for one batch.

    Args:
        weights: dict or ``.npz`` path: ``W1`` (obs_dim, H1), ..., ``Wn`` (H_last, 1) for the
            Bernoulli head or (H_last, n) for the categorical head, and ``b1``, ... with biases;
            for the gaussian head ``Wn`` (H_last, d) gives ``mu`` and ``log_std`` (d,) is there.
        batch: dict or ``.npz`` path: ``obs`` (N, obs_dim), ``actions`` (N,) of 0/1
            (Bernoulli) or of ``0 .. n-1`` (categorical), or (N, d) as sampled, unclipped
            (gaussian), and ``advantages`` (N,), or ``rewards`` (N,) with ``episode_ends``
            (N,) 0/1 flags. For PPO, one minibatch: its ``advantages`` as the update used
            them, ``old_log_probs`` (N,) ``log pi_old(a_t | s_t)`` (the port's own: a mistake
            in its log pi is in them too), and optionally ``clip`` (one number, PPO's ``eps``).
            The gaussian head's batch may hold the env's action bounds ``low`` and ``high``
            ((d,) or one number each): with them, ``log pi`` of ``clip(a, low, high)`` is among
            the causes (the bounds, not the clipped actions: pgrl clips as the rollout does,
            and a batch that stored clipped actions has nothing else to show).
        grads: the user's gradients, names and shapes of ``weights``, in pgrl's sign: ``dL/dW``
            of ``L = sum_t A_t * BCE(a_t, z_t)``, or of ``sum_t A_t * CE(a_t, z_t)`` with
            ``CE = -log softmax(z_t)[a_t]``, or of ``-sum_t A_t log N(a_t; mu_t, sigma^2)``
            (gaussian, ``log_std``'s with respect to ``log sigma``); with old log-probs, of
            PPO's clipped surrogate ``L = -sum_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps)
            A_t)``, ``rho_t = exp(log pi(a_t | s_t) - old_log_probs_t)``.
        after: the user's weights after one optimizer step from zero optimizer state, or None.
        optimizer: the RMSprop settings the user meant (Karpathy's defaults when None).
        reduction: ``"sum"`` or ``"mean"``, the loss the user meant.
        gamma, reset_on_nonzero, standardize: the returns the user meant, when the batch holds
            rewards (as :func:`pgrl.returns.compute_advantages`).
        head: ``"bernoulli"``, ``"categorical"``, ``"gaussian"``, or None: the gaussian head
            when the weights hold ``log_std``, else from ``Wn``'s columns (one column is the
            Bernoulli head, ``n >= 2`` the categorical head over ``n`` actions).
        clip: PPO's ``eps`` (the batch's ``clip`` when it holds one, which must agree; else
            ``ppo.clip``'s default); only with old log-probs.

    Returns:
        a :class:`Diagnosis`.

    Raises:
        InputError: one line naming a missing array, a shape that does not fit, a bad file.
    """
    _check_settings(head, reduction, standardize, gamma, clip)
    w, dist = check_network(load_arrays(weights, "weights"), head)
    b = check_batch(load_arrays(batch, "batch"), w["W1"].shape, dist)
    raw_grads = load_arrays(grads, "grads")
    user_grads = check_like(raw_grads, w, "grads")
    after = None if after is None else load_arrays(after, "after")
    note = WORDS[dist.name].note
    notes = [note.format(n=dist.n_actions)] if note else []
    notes += bounds_notes(b) if dist.densities else []
    loss = ""
    if b.old_log_probs is not None:
        b.clip, line = _ppo_clip(b.clip, clip)
        z = dist.logits(nn.head_forward(dist, w, b.obs)[1])
        rho = np.exp(dist.log_prob(z, b.actions) - b.old_log_probs)
        outside = np.mean(np.abs(rho - 1) > b.clip)
        notes.append(
            f"{line}; {outside:.0%} of the ratios outside [{1 - b.clip:g}, {1 + b.clip:g}]"
        )
        loss = "-sum_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)"
    elif clip is not None:
        raise InputError("ppo.clip without old_log_probs in the batch; PPO's surrogate needs both")
    # the ratio of probabilities rounds as the user's numbers do: in float32 when they are
    float32 = all(a.dtype == np.float32 for a in raw_grads.values())
    returns = (gamma, reset_on_nonzero, standardize)
    gradients = _gradient_part(w, dist, b, user_grads, reduction, *returns, float32)
    step = None if after is None else _step_part(w, user_grads, after, optimizer or RMSprop())
    if step is not None and gradients.matched and step.matched:
        if "sign" in gradients.best.causes and "ascent" in step.best.causes:
            gradients.excused.add("sign")
            step.excused.add("ascent")
            notes.append(
                "signs: your gradients are -dL/dW and your step adds them (Karpathy's gist): "
                "a descent step on L, as pgrl's"
            )
    return Diagnosis(gradients, step, dist.name, notes, loss)


def bounds_notes(b: Batch) -> list[str]:
    """The report's lines on the gaussian head's action bounds: how many actions lie beyond them,
    or that without them the clipped action's log pi is not among the causes."""
    if b.bounds is None:
        return [
            "bounds: the batch holds no low and high (the env's action bounds): "
            "log pi of the clipped action is not tested"
        ]
    beyond = np.any((b.actions < b.bounds[0]) | (b.actions > b.bounds[1]), axis=1)
    return [
        f"bounds: low {_short(b.bounds[0])}, high {_short(b.bounds[1])}; "
        f"{int(np.sum(beyond))} of {len(beyond)} actions beyond them"
    ]


def _short(v: np.ndarray) -> str:
    """A bound (d,) as one number when its entries agree."""
    return f"{v[0]:g}" if np.all(v == v[0]) else np.array2string(v, precision=3, separator=", ")


def _ppo_clip(batch_clip: float | None, clip: float | None) -> tuple[float, str]:
    """PPO's ``eps``: the batch's, ``clip`` (they must agree) or ``ppo.clip``'s default; and the
    report's line."""
    if batch_clip is not None and clip is not None and batch_clip != clip:
        raise InputError(f"batch clip {batch_clip:g} and ppo.clip {clip:g} differ; give one")
    given = batch_clip if batch_clip is not None else clip
    eps = given if given is not None else PPOConfig().clip
    source = "" if given is not None else " (ppo.clip's default)"
    return eps, (
        f"PPO: one minibatch of the clipped surrogate, rho_t = exp(logp_t - logp_old_t), "
        f"clip {eps:g}{source}"
    )


def _check_settings(head, reduction: str, standardize: str, gamma: float, clip=None) -> None:
    """InputError naming the first of :func:`explain`'s settings out of its choices."""
    for name, value, choices in (
        ("head", head, (None, *HEADS)),
        ("reduction", reduction, REDUCTIONS),
        ("standardize", standardize, STANDARDIZE),
    ):
        if value not in choices:
            shown = ", ".join(c for c in choices if c)
            raise InputError(f"{name} must be one of {shown}, got {value!r}")
    if not 0.0 <= gamma <= 1.0:
        raise InputError(f"gamma must be in [0, 1], got {gamma}")
    if clip is not None and not 0.0 < clip < 1.0:
        raise InputError(f"clip must be in (0, 1), got {clip}")


def dlogits(dist, z: np.ndarray, actions, advantages, dlogp=None) -> np.ndarray:
    """REINFORCE's ``dL/dz``, shaped as ``z``, through ``dlogp`` (the head's when None)."""
    dlogp = dist.dlog_prob(z, actions) if dlogp is None else dlogp
    return objectives.chain(objectives.reinforce(dist.log_prob(z, actions), advantages)[1], dlogp)


def logit_mistake(dist, z: np.ndarray, actions) -> np.ndarray:
    """``d log pi / dz`` with the logits in place of the probabilities (DESIGN.md, cause 1)."""
    return dist.onehot(actions).astype(z.dtype) - z


def port_log_prob(dist, z: np.ndarray, actions, causes=(), bounds=None):
    """(N,) ``log pi(a | z)`` and ``d log pi / dz`` (shaped as ``z``) as a port with the
    ``causes`` computes them: ``"logit"`` (:func:`logit_mistake`) and :data:`GAUSSIAN_CAUSES`
    (``"clipped"``: at ``clip(a, *bounds)``); continuous actions in the dtype of ``z``."""
    a = np.asarray(actions)
    if a.dtype.kind == "f":
        a = a.astype(z.dtype)
    if "clipped" in causes:
        a = np.clip(a, *(np.asarray(b, z.dtype) for b in bounds))
    logp = dist.log_prob(z, a)
    dlogp = logit_mistake(dist, z, a) if "logit" in causes else dist.dlog_prob(z, a)
    d = dist.n_outputs
    if "log_sigma" in causes:  # -(a - mu)^2 / (2 sigma^2) alone: d/dlog_std loses its -1
        logp = logp + np.sum(z[:, d:], axis=1)
        dlogp[:, d:] += 1
    if "std" in causes:  # dL/dsigma = dL/dlog_std / sigma
        dlogp[:, d:] *= np.exp(-z[:, d:])
    if "dim_mean" in causes:
        logp, dlogp = logp / d, dlogp / d
    return logp, dlogp


def ppo_ratio(dist, z: np.ndarray, actions, old_log_probs, causes=(), dlogp=None, logp=None):
    """(N,) ``rho = exp(logp - logp_old)`` and ``drho/dz = rho dlogp/dz`` (shaped as ``z``,
    through ``logp`` and ``dlogp``, the head's when None); with the cause ``"ratio"``,
    ``rho = pi / pi_old`` of probabilities (``pi_old = exp(logp_old)``) in the dtype of ``z``,
    and autodiff's ``drho/dz = pi (onehot(a) - p) / pi_old``: the same numbers until ``pi``
    rounds, NaN where both probabilities underflow to 0; for densities (the gaussian head's),
    ``exp(logp) / exp(logp_old)`` and ``drho/dz = rho dlogp/dz``, which overflow as well."""
    old = np.asarray(old_log_probs, z.dtype)
    if logp is None:
        logp, dlogp = (
            dist.log_prob(z, actions),
            dist.dlog_prob(z, actions) if dlogp is None else dlogp,
        )
    if "ratio" not in causes:
        rho = np.exp(logp - old)
        return rho, objectives.chain(rho, dlogp)
    if dist.densities:
        rho = np.exp(logp) / np.exp(old)
        return rho, objectives.chain(rho, dlogp)
    p = dist.probs(z)
    pi, pi_old = dist.action_probs(p)[np.arange(len(actions)), actions], np.exp(old)
    return pi / pi_old, objectives.chain(pi / pi_old, dist.onehot(actions).astype(z.dtype) - p)


def ppo_dlogits(
    dist,
    z: np.ndarray,
    actions,
    advantages,
    old_log_probs,
    clip: float,
    causes=(),
    dlogp=None,
    logp=None,
) -> np.ndarray:
    """PPO's ``dL/dz``, shaped as ``z``: ``-A_t drho_t/dz`` where the unclipped term
    ``rho_t A_t`` is the smaller (or equal), 0 where ``clip(rho_t, 1 - eps, 1 + eps) A_t`` is
    (:func:`pgrl.objectives.ppo`); ``rho`` and ``drho/dz`` as :func:`ppo_ratio` gives them
    (with the cause ``"ratio"``: of probabilities). With the cause ``"max"``, the min taken
    before the sign, ``min(-rho A, -clip(rho) A)``: the gradient flows where the unclipped term
    is the larger."""
    rho, drho = ppo_ratio(dist, z, actions, old_log_probs, causes, dlogp, logp)
    unclipped = rho * advantages
    clipped = np.clip(rho, 1 - clip, 1 + clip) * advantages
    flows = unclipped >= clipped if "max" in causes else unclipped <= clipped
    return objectives.chain(np.where(flows, -advantages, 0.0), drho)


def _gradient_part(
    w, dist, b: Batch, user: dict, reduction, gamma, reset, standardize, float32=False
) -> Part:
    """pgrl's ``dL/dW`` for the batch under every set of gradient causes, against ``user``
    (``float32``: the user's numbers are, and so is a ratio of their probabilities)."""
    ppo = b.old_log_probs is not None
    words = WORDS[dist.name]
    head_causes = [c for c in words.causes if c != "dim_mean" or dist.n_outputs > 1]
    head_causes = [c for c in head_causes if c != "clipped" or b.bounds is not None]
    labels = gradient_causes(
        reduction, standardize, reset, b.rewards is not None, words.probability, ppo, head_causes
    )
    hs, out = nn.head_forward(dist, w, b.obs)
    z = dist.logits(out)
    cache = {}  # one backward pass per (returns, dL/dz, ReLU mask); the rest is a scale

    def predict(combo):
        mode = next((c[len("standardize_") :] for c in combo if c.startswith("standardize_")), None)
        key = (mode or standardize, reset ^ ("reset" in combo))
        key += ("relu_mask" in combo, "ratio" in combo, "max" in combo)
        port = tuple(c for c in combo if c == "logit" or c in GAUSSIAN_CAUSES)
        key += port
        if key not in cache:
            adv = b.advantages
            if adv is None:
                adv = compute_advantages(b.rewards, b.ep_bounds, gamma, key[1], key[0])
            zz = z.astype(np.float32) if ppo and float32 and key[3] else z
            with np.errstate(all="ignore"):  # NaN where probabilities underflow: no match
                logp, dlogp = port_log_prob(dist, zz, b.actions, port, b.bounds)
                if ppo:
                    causes = [c for c in ("ratio", "max") if c in combo]
                    dz = ppo_dlogits(
                        dist, zz, b.actions, adv, b.old_log_probs, b.clip, causes, dlogp, logp
                    )
                else:
                    dz = dlogits(dist, z, b.actions, adv, dlogp)
            cache[key] = nn.head_backward(dist, w, hs, dz.astype(np.float64), key[2])
        used = ({"sum", "mean"} - {reduction}).pop() if "reduction" in combo else reduction
        scale = (1.0 / len(z) if used == "mean" else 1.0) * (-1.0 if "sign" in combo else 1.0)
        return {k: g * scale for k, g in cache[key].items()}

    candidates = []
    for combo in combinations(labels):
        pred = predict(combo)
        candidates.append(Candidate(combo, pred, {k: _layer_error(user[k], pred[k]) for k in w}))
    return Part("gradients", labels, candidates, user)


def _step_part(w, user_grads: dict, raw_after: dict, optimizer) -> Part:
    """pgrl's RMSprop step from the user's gradients under every set of optimizer causes,
    against the user's ``after - W``."""
    user_after = check_like(raw_after, w, "after")
    labels = step_causes(optimizer.epsilon_inside_sqrt)
    # the spacing of the saved weights: a float32 ``after`` holds the step to its last bit only
    ulp = {
        k: np.spacing(np.abs(a)).astype(np.float64) if a.dtype.kind == "f" else 0.0
        for k, a in raw_after.items()
    }
    user = {k: user_after[k] - w[k] for k in w}
    candidates = []
    for combo in combinations(labels):
        pred = rmsprop_step(w, user_grads, optimizer, combo)
        errors = {k: _layer_error(user[k], pred[k], ulp[k]) for k in w}
        candidates.append(Candidate(combo, pred, errors))
    step = Part("step", labels, candidates, user)
    if not step.matched:
        step.hint = learning_rate_hint(step, optimizer.learning_rate)
    return step


def rmsprop_step(weights: dict, grads: dict, optimizer: RMSprop, causes=()) -> dict:
    """``W_after - W`` of one RMSprop step from zero state, with the optimizer ``causes``."""
    lr = optimizer.learning_rate
    opt = RMSprop(
        learning_rate=float(np.float32(lr)) if "lr_float32" in causes else lr,
        decay=optimizer.decay,
        epsilon=optimizer.epsilon,
        epsilon_inside_sqrt=optimizer.epsilon_inside_sqrt ^ ("epsilon" in causes),
    )
    params = {k: v.copy() for k, v in weights.items()}
    g = {k: -v for k, v in grads.items()} if "ascent" in causes else grads
    opt.step(params, g, opt.init_state(params))
    return {k: params[k] - weights[k] for k in weights}


def learning_rate_hint(step: Part, learning_rate: float) -> str:
    """A learning rate under which a step candidate fits the user's step, as a hint, or ""."""
    user = np.concatenate([v.ravel() for v in step.user.values()])
    best = None
    for c in step.candidates:
        pred = np.concatenate([c.arrays[k].ravel() for k in step.user])
        norm = float(pred @ pred)
        if norm == 0:
            continue
        ratio = float(user @ pred) / norm  # the step is proportional to the learning rate
        error = max(_layer_error(step.user[k], ratio * c.arrays[k]) for k in step.user)
        if ratio > 0 and error <= TOL32 and (best is None or error < best[0]):
            best = (error, ratio, c.causes)
    if best is None:
        return ""
    with_causes = f" with {step.describe(best[2])}" if best[2] else ""
    return (
        f"a learning rate of {learning_rate * best[1]:.3g} instead of {learning_rate:g} fits"
        f"{with_causes} (--set optimizer.learning_rate=...)"
    )


def settings(overrides: list[str] | None) -> dict:
    """:func:`explain`'s keyword arguments from ``--set section.key=value`` strings, read as
    ``pgrl train`` reads them; only :data:`SETTINGS` (the network comes from the weights)."""
    from pgrl.config import ConfigError, from_dict, parse_override

    data: dict[str, dict] = {}
    for text in overrides or []:
        section, key, value = parse_override(text)
        if f"{section}.{key}" not in SETTINGS:
            raise ConfigError(
                f"--set {section}.{key}: not used by pgrl diagnose; it reads " + ", ".join(SETTINGS)
            )
        data.setdefault(section, {})[key] = value
    cfg = from_dict(data, "--set")
    o = cfg.optimizer
    return {
        "clip": cfg.ppo.clip if "clip" in data.get("ppo", {}) else None,
        "optimizer": RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt),
        "reduction": cfg.policy.reduction,
        "gamma": cfg.train.gamma,
        "reset_on_nonzero": cfg.train.reset_on_nonzero,
        "standardize": cfg.train.standardize,
        "head": cfg.policy.head if "head" in data.get("policy", {}) else None,
    }
