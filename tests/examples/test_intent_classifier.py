"""The example workload: tokenizer-free features, the shipped data, a real (short) train/resume/export."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "examples" / "intent_classifier"
sys.path.insert(0, str(EXAMPLE))
from model import features  # noqa: E402


def rows(name: str) -> list[dict[str, str]]:
    return [
        json.loads(line)
        for line in (EXAMPLE / "data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def test_features_are_stable_and_work_for_chinese() -> None:
    # crc32, not hash(): every process and host must map a text to the same buckets.
    assert features("我的订单到哪里了") == features("我的订单到哪里了")
    assert features("我的订单") != features("我的退款")
    out = subprocess.run(
        [sys.executable, "-c", "from model import features; print(features('where is my order'))"],
        cwd=EXAMPLE,
        env={"PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == features("where is my order")


def test_shipped_data_is_bilingual_balanced_and_held_out() -> None:
    train, val = rows("train"), rows("val")
    assert {r["lang"] for r in train} == {r["lang"] for r in val} == {"en", "zh"}
    intents = Counter(r["intent"] for r in train)
    assert len(intents) == 8 and min(intents.values()) >= 40
    assert not {r["text"] for r in train} & {r["text"] for r in val}


def test_dataset_is_reproducible_from_its_generator(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLE))
    import make_dataset

    train, val = make_dataset.build()
    assert [json.dumps(r, ensure_ascii=False) for r in train] == (EXAMPLE / "data" / "train.jsonl").read_text(
        encoding="utf-8"
    ).splitlines()
    assert len(val) == len(rows("val"))


@pytest.mark.timeout(120)
def test_trains_resumes_and_exports(tmp_path: Path) -> None:
    def train(epochs: int) -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE / "train.py"), "--epochs", str(epochs), "--checkpoint-dir", str(tmp_path),
             "--grad-accum", "2"],
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
        return done.stdout

    first = train(3)
    assert "epochs=0->3" in first and "final val_accuracy=" in first
    second = train(4)
    assert f"resumed from {tmp_path / 'checkpoint.pt'} at epoch 3" in second
    assert "epochs=3->4" in second
    labels = json.loads((tmp_path / "labels.json").read_text())
    scripted = torch.jit.load(str(tmp_path / "intent_classifier.ts"))
    from model import batch_features

    ids, offsets = batch_features(["我要退款", "where is my package"])
    assert scripted(ids, offsets).shape == (2, len(labels))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.timeout(180)
def test_ranks_resume_together_when_the_checkpoint_folder_is_not_shared(tmp_path: Path) -> None:
    # Two "hosts" with host-local checkpoint folders: only rank 0's has the checkpoint.
    # Ranks that each looked for themselves would train different epochs and hang.
    local = {0: tmp_path / "host-0", 1: tmp_path / "host-1"}
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--epochs", "2", "--checkpoint-dir", str(local[0]), "--no-export"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}

    def start(rank: int) -> subprocess.Popen[str]:
        argv = [sys.executable, str(EXAMPLE / "train.py"), "--epochs", "3", "--no-export"]
        return subprocess.Popen(
            [*argv, "--checkpoint-dir", str(local[rank])],
            env={**env, "RANK": str(rank), "LOCAL_RANK": "0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    ranks = [start(rank) for rank in local]
    try:
        outputs = [proc.communicate(timeout=120)[0] for proc in ranks]
    finally:
        for proc in ranks:
            proc.kill()
    assert [proc.returncode for proc in ranks] == [0, 0], outputs
    assert "resumed from" in outputs[0] and "epochs=2->3" in outputs[0], outputs[0]
    assert "final val_accuracy=" in outputs[0]
