"""The ``pgrl`` command: one function per subcommand, its arguments declared on it.

A user's mistake (a config typo, a corrupt checkpoint, a missing optional package) ends with one
line on stderr and exit status 2, never a traceback. Only the standard library and
:mod:`pgrl.validate` are imported at the top, so that a Ctrl-C during start-up ends with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from pgrl.validate import BACKENDS

# subcommand -> (help line, the function that runs it, its arguments as add_argument takes them)
COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int], list[tuple[str, dict]]]] = {}


def command(name: str, summary: str, *arguments: tuple[str, dict]):
    """Register the decorated ``f(args) -> exit status`` as subcommand ``name``."""

    def register(run):
        COMMANDS[name] = (summary, run, list(arguments))
        return run

    return register


def _arg(flag: str, **options) -> tuple[str, dict]:
    return flag, options


_CONFIG = _arg("config")  # its help lists the shipped configs: see build_parser
_SET = _arg("--set", action="append", metavar="KEY=VALUE", help="override a config key")
_EXECUTOR = (
    _arg(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: processes on this machine (default); ray: a Ray cluster",
    ),
    _arg(
        "--address",
        help="with --executor ray: HOST:PORT of the Ray head (default: RAY_ADDRESS, else a new "
        "local Ray instance)",
    ),
    _arg("--workers", type=int, help="local runs at once (default: one per core)"),
)


@command(
    "train",
    "train a policy from a TOML config",
    _CONFIG,
    _arg("--backend", choices=BACKENDS, help="override policy.backend"),
    _arg("--seed", type=int, help="override train.seed"),
    _arg("--out", help="run directory (default runs/<env>-<backend>-seed<k>)"),
    _arg(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.episodes=500 (repeatable)",
    ),
    _arg("--resume", action="store_true", help="continue from OUT/checkpoint.npz"),
    _arg("--force", action="store_true", help="start afresh in an OUT that holds a run"),
    _arg(
        "--init",
        metavar="W.npz",
        help="start the policy from these weights (pgrl export, a checkpoint.npz, or pong) "
        "instead of a random init; sets train.init",
    ),
    _arg(
        "--address",
        help='with env.runner = "ray": HOST:PORT of the Ray head (default: RAY_ADDRESS, else a '
        "new local Ray instance)",
    ),
    _arg(
        "--allow-changes",
        action="store_true",
        help="with --resume: accept a config that differs from the run's (recorded in the run)",
    ),
)
def _train(args) -> int:
    from pgrl.config import ConfigError, load_config
    from pgrl.reinforce import Interrupted, train

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.init is not None and args.resume:
        raise ConfigError("--init starts a run from weights, --resume continues one: choose one")
    cfg = load_config(args.config, overrides)
    if args.address is not None and cfg.env.runner != "ray":
        raise ConfigError('--address: needs env.runner = "ray" (--set env.runner=ray)')
    if args.init is not None:
        cfg.train.init = args.init
    try:
        summary = train(
            cfg,
            out=args.out,
            resume=args.resume,
            backend=args.backend,
            overwrite=args.force,
            allow_changes=args.allow_changes,
            address=args.address,
        )
    except Interrupted as e:
        print(f"pgrl train: interrupted; {e}; --resume continues it", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


@command(
    "eval",
    "play episodes with a trained policy",
    _arg(
        "checkpoint",
        help="a run's checkpoint.npz, a weights file (pgrl export), or a shipped policy: pong",
    ),
    _arg("--backend", choices=BACKENDS, help="default: the one it was trained with"),
    _arg("--episodes", type=int, default=10),
    _arg("--seed", type=int, default=0),
    _arg("--sample", action="store_true", help="sample actions instead of greedy"),
    _arg("--gif", help="write an animated GIF of the first episode here"),
)
def _eval(args) -> int:
    from pgrl.config import ConfigError
    from pgrl.play import evaluate

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    result = evaluate(
        args.checkpoint,
        episodes=args.episodes,
        seed=args.seed,
        backend=args.backend,
        greedy=not args.sample,
        gif=args.gif,
        progress=True,
    )
    print(json.dumps(result, indent=2))
    return 0


@command(
    "export",
    "write a run's weights alone, as a small weights file",
    _arg("checkpoint", help="checkpoint.npz of a run"),
    _arg("out", help="weights file to write, e.g. pong.npz"),
    _arg("--dtype", choices=("float32", "float64"), default="float32"),
    _arg("--note", default="", help="a line of text stored with the weights"),
)
def _export(args) -> int:
    from pgrl.play import export_weights

    info = export_weights(args.checkpoint, args.out, dtype=args.dtype, note=args.note)
    print(json.dumps({"out": args.out, **info}, indent=2))
    return 0


@command(
    "compare",
    "train every (backend, seed) pair and compare the curves",
    _CONFIG,
    _arg("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)),
    _arg("--seeds", nargs="+", type=int, default=[0, 1, 2]),
    _arg("--out", default="runs/compare", help="output directory (default %(default)s)"),
    *_EXECUTOR,
    _SET,
)
def _compare(args) -> int:
    from pgrl.compare import compare

    rows = compare(args.config, **_trial_options(args))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


@command(
    "sweep",
    "a hyperparameter grid x seeds, locally or on Ray Tune",
    _CONFIG,
    _arg(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="a config key and its values, read as --set reads them, e.g. "
        "--grid policy.hidden_sizes=[16],[32,32] (repeatable: the grid is the product)",
    ),
    _arg("--seeds", nargs="+", type=int, default=[0]),
    _arg("--backend", nargs="+", choices=BACKENDS, default=["numpy"], dest="backends"),
    _arg("--out", default="runs/sweep", help="output directory (default %(default)s)"),
    *_EXECUTOR,
    _arg(
        "--storage",
        help="with --executor ray: a directory every node sees, or a cloud URI, for Ray Tune's "
        "checkpoints (without it, results come back through Ray)",
    ),
    _arg(
        "--scheduler",
        choices=("none", "asha"),
        default="none",
        help="asha: Ray Tune's ASHA stops trials whose running return lags (--executor ray)",
    ),
    _SET,
    _arg("--resume", action="store_true", help="continue the sweep in OUT"),
    _arg("--force", action="store_true", help="start afresh in an OUT with a sweep"),
)
def _sweep(args) -> int:
    from pgrl.config import ConfigError
    from pgrl.sweep import sweep

    options = _trial_options(args)
    if args.resume and args.force:
        raise ConfigError("--resume and --force: choose one")
    try:
        rows = sweep(
            args.config,
            args.grid or [],
            **options,
            storage=args.storage,
            scheduler=None if args.scheduler == "none" else args.scheduler,
            resume=args.resume,
            force=args.force,
        )
    except KeyboardInterrupt:
        print(
            f"pgrl sweep: interrupted; finished trials are in {args.out}, "
            "--resume continues the others",
            file=sys.stderr,
        )
        return 130
    return 0 if all(r["status"] in ("ok", "stopped") for r in rows) else 1


def _trial_options(args) -> dict:
    """Compare's and sweep's shared options, checked."""
    from pgrl.config import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.executor != "local":
        raise ConfigError("--workers: for --executor local (Ray places trials by their CPUs)")
    for name, values in (("--seeds", args.seeds), ("--backends", args.backends)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} lists a value twice: {' '.join(map(str, values))}")
    if any(s < 0 for s in args.seeds):
        raise ConfigError(f"--seeds must be >= 0, got {' '.join(map(str, args.seeds))}")
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address: needs --executor ray")
    return {
        "backends": args.backends,
        "seeds": args.seeds,
        "out": args.out,
        "overrides": args.set,
        "executor": args.executor,
        "workers": args.workers,
        "address": args.address,
    }


@command(
    "check",
    "backend parity and finite differences for a config",
    _CONFIG,
    _arg("--explain", action="store_true", help="show what each usual mistake costs"),
    _arg("--seed", type=int, default=0, help="seed of the synthetic batch"),
    _SET,
)
def _check(args) -> int:
    from pgrl.build import action_size, check_env_id, env_spaces
    from pgrl.check import run_check
    from pgrl.config import ConfigError, load_config

    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    cfg = load_config(args.config, args.set)
    check_env_id(cfg)  # the env, and the head against its actions
    obs_space, action_space = env_spaces(cfg)
    obs_dim, n_actions = int(obs_space.shape[0]), action_size(action_space)
    bounds = getattr(action_space, "low", None), getattr(action_space, "high", None)
    lines, passed = run_check(
        cfg,
        obs_dim,
        explain=args.explain,
        seed=args.seed,
        n_actions=n_actions,
        bounds=None if bounds[0] is None else bounds,  # the gaussian head's Box
    )
    print("\n".join(lines))
    return 0 if passed else 1


@command(
    "diagnose",
    "which known porting mistake explains your gradients and RMSprop step "
    "(exit 0 correct, 1 known cause, 3 none)",
    _arg("--weights", required=True, metavar="W.npz", help="W1, W2, ... (b1, ..., log_std)"),
    _arg(
        "--batch",
        required=True,
        metavar="B.npz",
        help="obs, actions and advantages (or rewards and episode_ends); PPO: also "
        "old_log_probs (and clip); gaussian head: (N, d) actions, and low and high",
    ),
    _arg("--grads", required=True, metavar="G.npz", help="your dL/dW, named as the weights"),
    _arg("--after", metavar="A.npz", help="your weights after one optimizer step"),
    _arg("--optimizer", choices=("rmsprop",), default="rmsprop", help="the step's optimizer"),
    _arg(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="what you meant: optimizer.learning_rate, .decay, .epsilon, .epsilon_inside_sqrt, "
        "policy.reduction, train.gamma, train.reset_on_nonzero, train.standardize, ppo.clip",
    ),
)
def _diagnose(args) -> int:
    from pgrl.config import ConfigError
    from pgrl.diagnose import InputError, explain, settings

    kwargs = settings(args.set)
    try:
        result = explain(args.weights, args.batch, args.grads, args.after, **kwargs)
    except InputError as e:
        raise ConfigError(str(e)) from None
    print(result)
    return result.exit_code


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line like every other pgrl error (the usage it
    would print first is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``pgrl`` parser: a subparser per entry of :data:`COMMANDS`, in their order."""
    from pgrl import __version__
    from pgrl.config import shipped_configs

    parser = Parser(prog="pgrl", description="REINFORCE with NumPy and TF backends")
    parser.add_argument("--version", action="version", version=f"pgrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    shipped = ", ".join(shipped_configs())
    config_help = (
        f"a TOML file, e.g. configs/cartpole.toml, or the name of a shipped config: {shipped}"
    )
    for name, (summary, run, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=summary)
        for flag, options in arguments:
            p.add_argument(flag, **(options or {"help": config_help}))
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``pgrl`` command; returns its exit status."""
    command = None
    try:
        try:
            args = build_parser().parse_args(argv)
            errors = _errors()  # loads pgrl's runtime (NumPy, gymnasium): still the start-up
            command = args.command
            return _run(args, *errors)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except KeyboardInterrupt:  # before a run started (imports, TF, envs): nothing written
        print(f"pgrl{f' {command}' if command else ''}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (pgrl ... | head): exit quietly
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process a closed pipe ended


def _errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The errors a command ends with in one line: (exit 2: a user's mistake, exit 1: training
    stopped with its last update checkpointed, or the system refused something unforeseen)."""
    from pgrl.checkpoint import CheckpointError
    from pgrl.config import ConfigError
    from pgrl.rollout import RolloutError

    return (ConfigError, CheckpointError, ImportError), (RolloutError, OSError)


def _run(args, mistakes: tuple[type, ...], failures: tuple[type, ...]) -> int:
    try:
        return args.func(args)
    except BrokenPipeError:  # main() ends quietly on a closed stdout
        raise
    except mistakes + failures as e:
        print(f"pgrl {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2 if isinstance(e, mistakes) else 1


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` as one terminal line: control characters escaped (a file name may hold a
    newline), and the middle of a text longer than ``limit`` left out (a value may be huge)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 300]} ... ({len(text):,} characters) ... {text[-250:]}"


if __name__ == "__main__":
    sys.exit(main())
