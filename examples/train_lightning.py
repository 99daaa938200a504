"""PyTorch Lightning on synthetic data, with nothing hpcjobs-specific: Lightning's own SLURM
support checkpoints at the time-limit warning and requeues the job itself.

    hpcjobs submit train --nodes 3 --time 30 --requeue --signal USR1 --signal-handler program \
        -- examples/train_lightning.py --epochs 100 --root runs/lightning
    sbatch --nodes=3 --requeue --signal=B:USR1@120 --export=ALL,HPCJOBS_SIGNAL=USR1,HPCJOBS_SIGNAL_HANDLER=program \
        job_templates/train.sbatch examples/train_lightning.py --epochs 100 --root runs/lightning

Lightning detects Slurm (SLURMEnvironment: SLURM_NTASKS set, job name not "bash"/"interactive"),
takes ranks from SLURM_PROCID/SLURM_LOCALID/SLURM_NODEID and the rendezvous from the launcher's
MASTER_ADDR/MASTER_PORT. Its signal connector installs a SIGUSR1 handler, but only while SIGUSR1
is at its default disposition: hence `--signal-handler program` (hpcjobs otherwise starts
programs with the warning signal ignored). On the signal every rank enters
`trainer.save_checkpoint(<root>/hpc_ckpt_<n>.ckpt)` and rank 0 runs `scontrol requeue`; the
restarted job finds the highest hpc_ckpt in the root and resumes from its epoch and step.

`--devices` and `--num-nodes` default to Slurm's SLURM_NTASKS_PER_NODE and SLURM_NNODES (Lightning
checks that they match). `--step-seconds` makes each step take that long (a stand-in for real
work, so that a time limit falls in the middle of training). Rank 0 prints `start`, `step 1`,
`checkpoint`, `epoch` and `training done` lines that tests/integration/test_lightning.py reads.
"""

import argparse
import os
import socket
import time

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=20, help="steps per epoch on each rank")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--step-seconds", type=float, default=0.0, help="sleep this long in each step")
    p.add_argument("--root", default=".", help="Trainer(default_root_dir=...): where hpc_ckpt_N.ckpt goes")
    p.add_argument("--devices", type=int, default=int(os.environ.get("SLURM_NTASKS_PER_NODE", 1)))
    p.add_argument("--num-nodes", type=int, default=int(os.environ.get("SLURM_NNODES", 1)))
    return p.parse_args()


class Regression(pl.LightningModule):
    """A small MLP fitting y = x @ w + noise."""

    def __init__(self, lr: float, step_seconds: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
        self.lr, self.step_seconds = lr, step_seconds
        self.last_loss = float("nan")

    def training_step(self, batch, batch_idx):
        if self.step_seconds:
            # Before the forward pass: a signal almost always finds every rank here, outside the
            # gradient all_reduce, when Lightning's handler enters its checkpoint barrier.
            time.sleep(self.step_seconds)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.last_loss = loss.item()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Report(pl.Callback):
    """What the job did, in lines a test can read (rank 0; every rank says where it runs)."""

    def on_train_start(self, trainer, module):
        print(f"rank {trainer.global_rank}/{trainer.world_size} on {socket.gethostname()}", flush=True)
        if trainer.is_global_zero:
            print(f"start: epoch {trainer.current_epoch} step {trainer.global_step} restart "
                  f"{os.environ.get('SLURM_RESTART_COUNT', '0')} from {trainer.ckpt_path or 'scratch'}",
                  flush=True)

    def on_save_checkpoint(self, trainer, module, checkpoint):
        if trainer.is_global_zero:
            print(f"checkpoint: epoch {checkpoint['epoch']} step {checkpoint['global_step']}", flush=True)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.is_global_zero and trainer.global_step == 1:
            print(f"step 1 loss {module.last_loss:.4f}", flush=True)

    def on_train_epoch_end(self, trainer, module):
        if trainer.is_global_zero:
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {trainer.global_step} "
                  f"loss {module.last_loss:.4f}", flush=True)

    def on_train_end(self, trainer, module):
        if trainer.is_global_zero:
            print(f"training done: {trainer.current_epoch} epochs, {trainer.global_step} steps, "
                  f"loss {module.last_loss:.4f}", flush=True)


def main() -> int:
    args = parse()
    world = args.devices * args.num_nodes
    g = torch.Generator().manual_seed(0)  # the same data on every rank and every restart
    n = args.steps_per_epoch * args.batch_size * world
    x = torch.randn(n, 16, generator=g)
    y = x @ torch.randn(16, 1, generator=g) + 0.01 * torch.randn(n, 1, generator=g)
    data = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    trainer = pl.Trainer(
        accelerator="auto", devices=args.devices, num_nodes=args.num_nodes,
        strategy="ddp" if world > 1 else "auto", max_epochs=args.epochs,
        default_root_dir=args.root, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Report()])
    # No ckpt_path: on Slurm, Lightning itself resumes from the newest <root>/hpc_ckpt_N.ckpt.
    trainer.fit(Regression(args.lr, args.step_seconds), data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
