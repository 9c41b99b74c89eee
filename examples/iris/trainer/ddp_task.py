"""Distributed iris training with PyTorch DistributedDataParallel over the gloo backend.

mlengine's runner (like AI Platform's PyTorch containers) sets ``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE`` and ``RANK`` for the master (rank 0) and each worker. Parameter
servers and evaluators get no ``RANK``; for them this module prints a line and exits 0.

Each rank trains on its own rank-strided shard of the training split. To prove that DDP
averages gradients across processes, the first step records, on every rank, the gradient of a
plain (non-DDP) copy of the model on the rank's batch (``local_grad``) and the gradient DDP
leaves after its all-reduce (``ddp_grad``); ``ddp_grad`` must equal the mean of all ranks'
``local_grad``. Each rank writes ``<out>/ddp/rank-<R>.json``::

    {"rank", "world_size", "local_grad": [...], "ddp_grad": [...], "final_param_checksum"}

Rank 0 then evaluates and exports the model exactly like `trainer.task` (``model.pt2``,
``metadata.json``, ``metrics.json``, hypertune ``accuracy``).

Run by hand, one shell per rank, from the directory that contains the `trainer` package::

    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=0 python -m trainer.ddp_task \
        --job-dir out
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=1 python -m trainer.ddp_task \
        --job-dir out
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import os
import socket
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer import common
from trainer import model as iris_model

INIT_TIMEOUT = datetime.timedelta(seconds=60)


@dataclasses.dataclass
class Trained:
    """What `train` hands to `export`: the trained model, its data split and final loss."""

    model: nn.Module
    split: common.IrisSplit
    train_loss: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the trainer's command line (``--job-dir X`` and ``--job-dir=X`` both work)."""
    parser = argparse.ArgumentParser(prog="trainer.ddp_task", description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", required=True, help="where outputs are written")
    parser.add_argument("--epochs", type=int, default=5, help="passes over each rank's shard")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per step and rank")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument(
        "--hidden-units",
        type=iris_model.hidden_units,
        default=iris_model.hidden_units("10,20,10"),
        help="comma separated hidden layer widths (default 10,20,10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the init")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.learning_rate <= 0:
        parser.error("--epochs and --batch-size must be >= 1 and --learning-rate > 0")
    return args


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flat_grad(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().reshape(-1) for p in module.parameters()])


def _checksum(module: nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in module.parameters()))


def train(args: argparse.Namespace, rank: int, world_size: int) -> Trained:
    """Train this rank's shard under DDP; the process group must already be initialised.

    Writes ``<out>/ddp/rank-<rank>.json``. Does not export; see `main`.

    Returns:
        The trained model (unwrapped), the split and the last epoch's all-reduced mean loss.
    """
    split = common.load_split(args.seed)
    mean, scale = iris_model.standardisation(split.x_train)
    # The same seed on every rank gives the same init; DDP also broadcasts rank 0's weights,
    # but the plain copy below must start from the same point without that help.
    torch.manual_seed(args.seed)
    net = iris_model.IrisDNN(mean, scale, args.hidden_units, len(split.class_names))
    plain = copy.deepcopy(net)
    ddp = DistributedDataParallel(net)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.learning_rate)
    loss_fn = nn.CrossEntropyLoss()

    # Rank-strided shard, cut to the same length on every rank so all ranks take the same
    # number of steps (DDP's all-reduces must pair up).
    per_rank = len(split.x_train) // world_size
    x_shard = torch.from_numpy(split.x_train[rank::world_size][:per_rank])
    y_shard = torch.from_numpy(split.y_train[rank::world_size][:per_rank])
    generator = torch.Generator().manual_seed(args.seed * 1000 + rank)

    local_grad: list[float] = []
    ddp_grad: list[float] = []
    train_loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        ddp.train()
        totals = torch.zeros(2, dtype=torch.float64)
        for batch in torch.randperm(per_rank, generator=generator).split(args.batch_size):
            xb, yb = x_shard[batch], y_shard[batch]
            if not ddp_grad:
                plain.zero_grad()
                loss_fn(plain(xb), yb).backward()
                local_grad = _flat_grad(plain).tolist()
            optimizer.zero_grad()
            loss = loss_fn(ddp(xb), yb)
            loss.backward()
            if not ddp_grad:
                ddp_grad = _flat_grad(ddp.module).tolist()
            optimizer.step()
            totals += torch.tensor([loss.item() * len(batch), len(batch)], dtype=torch.float64)
        dist.all_reduce(totals)
        train_loss = float(totals[0] / totals[1])
        common.log(f"epoch {epoch} loss {train_loss:.4f}")

    out = common.output_dir(args.job_dir)
    record = {
        "rank": rank,
        "world_size": world_size,
        "local_grad": local_grad,
        "ddp_grad": ddp_grad,
        "final_param_checksum": _checksum(ddp.module),
    }
    common.write_json(common.join(out, "ddp", f"rank-{rank}.json"), record)
    common.log(f"rank {rank} final parameter checksum {record['final_param_checksum']!r}")
    return Trained(model=ddp.module, split=split, train_loss=train_loss)


def export(args: argparse.Namespace, trained: Trained, world_size: int) -> dict[str, float]:
    """Evaluate and export the model trained by `train` (rank 0 only), like `trainer.task`.

    Returns:
        The metrics written to ``metrics.json``.
    """
    net, split = trained.model, trained.split
    accuracy, test_loss = iris_model.evaluate(net, split.x_test, split.y_test)
    common.log(f"test accuracy {accuracy:.4f} loss {test_loss:.4f}")
    out = common.output_dir(args.job_dir)
    metadata = iris_model.metadata(split, accuracy, {"world_size": world_size})
    path = iris_model.export(net, split.x_test[:8], common.model_dir(out), metadata)
    common.log(f"exported {path}")
    metrics = {
        "accuracy": accuracy,
        "loss": test_loss,
        "train_loss": trained.train_loss,
        "epochs": args.epochs,
        "world_size": world_size,
    }
    common.write_json(common.join(out, "metrics.json"), metrics)
    if common.report_metric("accuracy", accuracy, global_step=args.epochs):
        common.log("reported hypertune metric accuracy")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainer.ddp_task``; returns the process exit code."""
    args = parse_args(argv)
    if "RANK" not in os.environ:
        kind = common.task_type() or "this replica"
        common.log(f"ddp_task: no RANK in the environment ({kind}); nothing to do, exiting")
        return 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:  # a lone process needs no rendezvous address from anyone
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    torch.set_num_threads(1)
    common.log(
        f"rank {rank}/{world_size} joining gloo group at "
        f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    )
    dist.init_process_group(
        "gloo", init_method="env://", rank=rank, world_size=world_size, timeout=INIT_TIMEOUT
    )
    try:
        trained = train(args, rank, world_size)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        export(args, trained, world_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
