"""Train the intent classifier with DDP: gloo on CPU, nccl on GPU.

Run it alone (``python train.py``), with torchrun on one machine
(``torchrun --standalone --nproc-per-node 2 train.py``), or across a cluster
(``gpufleet train --stack local examples/intent_classifier/train.py``).

Each epoch ends with an atomic checkpoint (write a temporary file, then
``os.replace``) in --checkpoint-dir, normally on the checkpoint NAS share; a run
that finds a checkpoint there resumes from it. Rank 0 prints the final
validation accuracy as one parseable line::

    intent_classifier: final val_accuracy=0.9412 val_examples=119 epochs=8 world_size=4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import BUCKETS, IntentClassifier, batch_features

HERE = Path(__file__).resolve().parent
CHECKPOINT = "checkpoint.pt"
EXPORT = "intent_classifier.ts"


def default_checkpoint_dir() -> str:
    if os.environ.get("INTENT_CHECKPOINT_DIR"):
        return os.environ["INTENT_CHECKPOINT_DIR"]
    shared = Path("/checkpoints")
    if shared.is_dir() and os.access(shared, os.W_OK):
        return str(shared / "intent-classifier")
    return str(HERE / "checkpoints")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE / "data"), help="folder with train.jsonl and val.jsonl")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="per process, per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--fp16", action="store_true", help="autocast to float16 (CUDA only)")
    parser.add_argument("--checkpoint-dir", default=default_checkpoint_dir())
    parser.add_argument("--no-export", action="store_true", help="skip the TorchScript export")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class Utterances(Dataset[tuple[str, int]]):
    def __init__(self, path: Path, labels: list[str] | None = None) -> None:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        self.labels = labels or sorted({row["intent"] for row in rows})
        index = {label: i for i, label in enumerate(self.labels)}
        self.rows = [(row["text"], index[row["intent"]]) for row in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.rows[i]


def collate(batch: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, offsets = batch_features([text for text, _ in batch])
    return ids, offsets, torch.tensor([label for _, label in batch], dtype=torch.long)


def log(rank: int, message: str) -> None:
    # One write per line: ranks share the log, and partial lines would interleave.
    if rank == 0:
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()


def save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, rank: int, distributed: bool) -> dict[str, Any] | None:
    """Rank 0 reads the checkpoint (if any) and hands it to every rank.

    So every rank resumes from the same epoch even when --checkpoint-dir is not
    shared (a host-local path): ranks that each looked for themselves would start
    in different epochs and wait for each other's collectives forever.
    """
    state = torch.load(path, map_location="cpu", weights_only=True) if rank == 0 and path.is_file() else None
    if distributed:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def evaluate(model: nn.Module, loader: DataLoader[tuple[str, int]], device: torch.device) -> tuple[int, int]:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for ids, offsets, labels in loader:
            logits = model(ids.to(device), offsets.to(device))
            correct += int((logits.argmax(dim=1) == labels.to(device)).sum())
            total += len(labels)
    model.train()
    return correct, total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    distributed = "RANK" in os.environ
    use_cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    fp16 = args.fp16 and use_cuda
    if args.fp16 and not use_cuda:
        log(rank, "note: --fp16 needs CUDA; training in float32 on CPU")

    data = Path(args.data)
    train_set = Utterances(data / "train.jsonl")
    val_set = Utterances(data / "val.jsonl", labels=train_set.labels)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, collate_fn=collate)
    val_loader = DataLoader(val_set, batch_size=256, collate_fn=collate)

    model: nn.Module = IntentClassifier(len(train_set.labels), buckets=BUCKETS).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    checkpoint_dir = Path(args.checkpoint_dir)
    checkpoint_path = checkpoint_dir / CHECKPOINT
    start_epoch = 0
    state = load_checkpoint(checkpoint_path, rank, distributed)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        log(rank, f"intent_classifier: resumed from {checkpoint_path} at epoch {start_epoch}")
    elif rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    ddp: nn.Module = DistributedDataParallel(model) if distributed else model
    log(
        rank,
        f"intent_classifier: world_size={world} device={device.type} train={len(train_set)} "
        f"val={len(val_set)} intents={len(train_set.labels)} epochs={start_epoch}->{args.epochs}",
    )
    loss_fn = nn.CrossEntropyLoss()
    started = time.monotonic()
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        total_loss = torch.zeros((), device=device)
        steps = 0
        for step, (ids, offsets, labels) in enumerate(train_loader):
            last_micro = (step + 1) % args.grad_accum == 0 or step + 1 == len(train_loader)
            # Skip the gradient all-reduce on micro-batches that only accumulate.
            sync = contextlib.nullcontext() if last_micro or not distributed else ddp.no_sync()  # type: ignore[operator]
            with sync, torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
                loss = loss_fn(ddp(ids.to(device), offsets.to(device)), labels.to(device))
                scaler.scale(loss / args.grad_accum).backward()
            if last_micro:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            total_loss += loss.detach()
            steps += 1
        if distributed:
            dist.all_reduce(total_loss)
        mean_loss = float(total_loss) / max(steps, 1) / world
        if rank == 0:
            save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "labels": train_set.labels,
                },
                checkpoint_path,
            )
        log(rank, f"intent_classifier: epoch {epoch + 1}/{args.epochs} loss={mean_loss:.4f}")

    if rank == 0:
        correct, total = evaluate(model, val_loader, device)
        if not args.no_export:
            scripted = torch.jit.script(model.cpu().eval())
            tmp = checkpoint_dir / f".{EXPORT}.tmp-{os.getpid()}"
            scripted.save(str(tmp))
            os.replace(tmp, checkpoint_dir / EXPORT)
            (checkpoint_dir / "labels.json").write_text(json.dumps(train_set.labels) + "\n")
        log(
            rank,
            f"intent_classifier: final val_accuracy={correct / total:.4f} val_examples={total} "
            f"epochs={args.epochs} world_size={world} train_seconds={time.monotonic() - started:.1f} "
            f"checkpoint={checkpoint_path}",
        )
    if distributed:
        # Without this barrier ~1 in 10 gloo runs aborted at exit (ranks tearing down mid-collective).
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    if "RANK" in os.environ:
        # Even after barrier + destroy_process_group, about 1 run in 8 here had one
        # gloo rank abort at interpreter exit ("terminate called without an active
        # exception", a C++ thread torn down by static destructors). All work is done
        # and flushed by now, so skip those destructors.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
