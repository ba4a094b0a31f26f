"""The ``pgrl`` command: train and eval (compare and check build on these).

Mistakes a user can make (a config typo, a bad value, a corrupt checkpoint, a missing optional
package) end with one line on stderr and exit status 2, never a traceback.

The module imports only the standard library at its top: pgrl's modules (and NumPy) are loaded
inside :func:`main`, so that a Ctrl-C at any moment of the start-up ends with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _train(args) -> int:
    from pgrl.config import load_config
    from pgrl.reinforce import Interrupted, train

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    cfg = load_config(args.config, overrides)
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


def _export(args) -> int:
    from pgrl.play import export_weights

    info = export_weights(args.checkpoint, args.out, dtype=args.dtype, note=args.note)
    print(json.dumps({"out": args.out, **info}, indent=2))
    return 0


def _compare(args) -> int:
    from pgrl.compare import compare

    _check_axes(args)
    rows = compare(
        args.config,
        backends=args.backends,
        seeds=args.seeds,
        out=args.out,
        workers=args.workers,
        overrides=args.set,
        executor=args.executor,
        address=args.address,
    )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _sweep(args) -> int:
    from pgrl.config import ConfigError
    from pgrl.sweep import sweep

    _check_axes(args)
    if args.resume and args.force:
        raise ConfigError("--resume and --force: choose one")
    try:
        rows = sweep(
            args.config,
            args.grid or [],
            seeds=args.seeds,
            backends=args.backend,
            out=args.out,
            overrides=args.set,
            executor=args.executor,
            workers=args.workers,
            address=args.address,
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


def _check_axes(args) -> None:
    """Shared checks of compare's and sweep's --seeds, --backends, --workers and --executor."""
    from pgrl.config import ConfigError

    backends = getattr(args, "backends", None) or args.backend
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.executor != "local":
        raise ConfigError("--workers: for --executor local (Ray places trials by their CPUs)")
    for name, values in (("--seeds", args.seeds), ("--backends", backends)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} lists a value twice: {' '.join(map(str, values))}")
    if any(s < 0 for s in args.seeds):
        raise ConfigError(f"--seeds must be >= 0, got {' '.join(map(str, args.seeds))}")
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address: needs --executor ray")


def _check(args) -> int:
    from pgrl.check import run_check
    from pgrl.config import ConfigError, load_config
    from pgrl.envs import make_env

    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    cfg = load_config(args.config, args.set)
    try:
        env = make_env(cfg.env.id, **cfg.env.make_kwargs())
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env {cfg.env.id} with env.kwargs {cfg.env.kwargs}: {e}") from None
    obs_dim, n_actions = int(env.observation_space.shape[0]), int(env.action_space.n)
    env.close()
    lines, passed = run_check(
        cfg, obs_dim, explain=args.explain, seed=args.seed, n_actions=n_actions
    )
    print("\n".join(lines))
    return 0 if passed else 1


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


def _executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: processes on this machine (default); ray: a Ray cluster",
    )
    p.add_argument(
        "--address",
        help="with --executor ray: HOST:PORT of the Ray head (default: RAY_ADDRESS, else a new "
        "local Ray instance)",
    )
    p.add_argument("--workers", type=int, help="local runs at once (default: one per core)")


def build_parser() -> argparse.ArgumentParser:
    from pgrl import __version__
    from pgrl.config import shipped_configs
    from pgrl.policies import BACKENDS

    parser = argparse.ArgumentParser(
        prog="pgrl", description="REINFORCE with NumPy and TF backends"
    )
    parser.add_argument("--version", action="version", version=f"pgrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = (
        "a TOML file, e.g. configs/cartpole.toml, or the name of a shipped config: "
        + ", ".join(shipped_configs())
    )

    p = sub.add_parser("train", help="train a policy from a TOML config")
    p.add_argument("config", help=config_help)
    p.add_argument("--backend", choices=BACKENDS, help="override policy.backend")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--out", help="run directory (default runs/<env>-<backend>-seed<k>)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.episodes=500 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--force", action="store_true", help="start afresh in an OUT that holds a run")
    p.add_argument(
        "--init",
        metavar="W.npz",
        help="start the policy from these weights (pgrl export, a checkpoint.npz, or pong) "
        "instead of a random init; sets train.init",
    )
    p.add_argument(
        "--address",
        help='with env.runner = "ray": HOST:PORT of the Ray head (default: RAY_ADDRESS, else a '
        "new local Ray instance)",
    )
    p.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: accept a config that differs from the run's (recorded in the run)",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="play episodes with a trained policy")
    p.add_argument(
        "checkpoint",
        help="a run's checkpoint.npz, a weights file (pgrl export), or a shipped policy: pong",
    )
    p.add_argument("--backend", choices=BACKENDS, help="default: the one it was trained with")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", action="store_true", help="sample actions instead of greedy")
    p.add_argument("--gif", help="write an animated GIF of the first episode here")
    p.set_defaults(func=_eval)

    p = sub.add_parser("export", help="write a run's weights alone, as a small weights file")
    p.add_argument("checkpoint", help="checkpoint.npz of a run")
    p.add_argument("out", help="weights file to write, e.g. pong.npz")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--note", default="", help="a line of text stored with the weights")
    p.set_defaults(func=_export)

    p = sub.add_parser("compare", help="train every (backend, seed) pair and compare the curves")
    p.add_argument("config", help=config_help)
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/compare", help="output directory (default %(default)s)")
    _executor_arguments(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=_compare)

    p = sub.add_parser("sweep", help="a hyperparameter grid x seeds, locally or on Ray Tune")
    p.add_argument("config", help=config_help)
    p.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="a config key and its values, read as --set reads them, e.g. "
        "--grid policy.hidden_sizes=[16],[32,32] (repeatable: the grid is the product)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--backend", nargs="+", choices=BACKENDS, default=["numpy"])
    p.add_argument("--out", default="runs/sweep", help="output directory (default %(default)s)")
    _executor_arguments(p)
    p.add_argument(
        "--storage",
        help="with --executor ray: a directory every node sees, or a cloud URI, for Ray Tune's "
        "checkpoints (without it, results come back through Ray)",
    )
    p.add_argument(
        "--scheduler",
        choices=("none", "asha"),
        default="none",
        help="asha: Ray Tune's ASHA stops trials whose running return lags (--executor ray)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--resume", action="store_true", help="continue the sweep in OUT")
    p.add_argument("--force", action="store_true", help="start afresh in an OUT with a sweep")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("check", help="backend parity and finite differences for a config")
    p.add_argument("config", help=config_help)
    p.add_argument("--explain", action="store_true", help="show what each usual mistake costs")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "diagnose",
        help="which known porting mistake explains your gradients and RMSprop step "
        "(exit 0 correct, 1 known cause, 3 none)",
    )
    p.add_argument("--weights", required=True, metavar="W.npz", help="W1, W2, ... (b1, ...)")
    p.add_argument(
        "--batch",
        required=True,
        metavar="B.npz",
        help="obs, actions and advantages (or rewards and episode_ends)",
    )
    p.add_argument(
        "--grads", required=True, metavar="G.npz", help="your dL/dW, named as the weights"
    )
    p.add_argument("--after", metavar="A.npz", help="your weights after one optimizer step")
    p.add_argument(
        "--optimizer", choices=("rmsprop",), default="rmsprop", help="the step's optimizer"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="what you meant: optimizer.learning_rate, .decay, .epsilon, .epsilon_inside_sqrt, "
        "policy.reduction, train.gamma, train.reset_on_nonzero, train.standardize",
    )
    p.set_defaults(func=_diagnose)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``pgrl`` command; returns its exit status."""
    command = None
    try:
        try:
            args = build_parser().parse_args(argv)
            command = args.command
            return _run(args)
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


def _run(args) -> int:
    from pgrl.checkpoint import CheckpointError
    from pgrl.config import ConfigError
    from pgrl.rollout import RolloutError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ImportError) as e:
        print(f"pgrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RolloutError as e:  # training stopped, its last update checkpointed
        print(f"pgrl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # main() ends quietly on a closed stdout
        raise
    except OSError as e:  # the system refused something no check above foresaw
        print(f"pgrl {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
