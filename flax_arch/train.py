"""Trains any registered model on real data: ``python -m flax_arch.train MODEL [options]``.

The task is the registry entry's: a classifier (integer labels, per example or at every step
of a sequence), an auto-encoder, the VAE, or a GAN's generator and discriminator pair
(``dcgan``). Data: scikit-learn's digits, or ``--data`` arrays; the size arguments follow
the data, the others come from the registry's ``--size`` configuration and ``--kwargs``.
Outputs in ``--out``: ``metrics.jsonl``, Orbax ``checkpoints/`` (a rerun resumes exactly),
and ``samples.png`` for the generative models. The run itself is
:mod:`flax_arch.training.trainer`; this module parses the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

import jax

from flax_arch.cli import USER_ERRORS, add_kwargs_option, parse_kwargs, report_error
from flax_arch.registry import GANS
from flax_arch.training.tasks import GANTask, Task
from flax_arch.training.trainer import TrainConfig, train
from flax_arch.xla import configure_cpu_memory, configure_xla_cpu

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig("")
    p = argparse.ArgumentParser(prog="python -m flax_arch.train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", help=f"a registered model, or a GAN ({', '.join(GANS)}) for its "
                                 "generator and discriminator pair")
    add_kwargs_option(p)
    p.add_argument("--size", choices=("test", "bench"), default=d.size,
                   help="the registry configuration the other arguments come from "
                        f"(default {d.size})")
    p.add_argument("--data", help=".npy (x) or .npz (x, y) arrays, channels-last "
                                  "(default: scikit-learn's digits)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"default {d.steps}")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"the global batch (default {d.batch_size})")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer,
                   help="Adam, or SGD with momentum 0.9 (default adam)")
    p.add_argument("--lr", type=float,
                   help=f"default {Task.default_lr:g} (GANs: {GANTask.default_lr:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"held out (default {d.val_fraction})")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help=f"steps (default {d.eval_every})")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help=f"steps (default {d.log_every})")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                   help="steps (default: at the end only)")
    p.add_argument("--keep", type=int, default=d.keep,
                   help=f"checkpoints kept (default {d.keep})")
    p.add_argument("--out", help="output directory (default runs/MODEL)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host)")
    p.add_argument("--coordinator", help="with --distributed: the coordinator's host:port "
                                         "(else detected from the cluster)")
    p.add_argument("--num-processes", type=int, help="with --distributed")
    p.add_argument("--process-id", type=int, help="with --distributed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flax_arch.train``: prints the run's summary as JSON (on the first
    process); the exit status (2 for a refused run)."""
    args = _parser().parse_args(argv)
    try:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in vars(args).items() if k in fields}
        values["kwargs"] = parse_kwargs(args.kwargs)
        summary = train(TrainConfig(**values))
    except USER_ERRORS as err:
        return report_error(err)
    if jax.process_index() == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    configure_cpu_memory()  # before JAX starts: the imports above start no backend
    configure_xla_cpu()
    sys.exit(main())
