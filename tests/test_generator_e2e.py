"""The generator's end-to-end loop: it runs data-parallel under Accelerate (two CPU processes on gloo
draw different batches and end with the same weights) and resumes from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

NAMES = ["reverse", "uppercase", "first_letter"]


def _generator():  # noqa: ANN202
    from umaf.generator import AdapterGenerator
    from umaf.generator.config import GeneratorConfig
    from umaf.generator.model import target_module_specs
    from umaf.models import build_tiny

    target = build_tiny("llama", "xs", seed=3)
    config = GeneratorConfig(target="tiny", target_modules=("q_proj", "v_proj"), rank=2, gen_rank=4,
                             task_dim=16, emb_dim=8, hidden=32, n_blocks=1, dropout=0.0, e2e_steps=3,
                             e2e_caps_per_step=2, e2e_examples_per_cap=2, e2e_dtype="float32",
                             e2e_lr=1e-2, warmup=1, progress=False)
    torch.manual_seed(0)
    gen = AdapterGenerator(config, target_module_specs(target.model, config.target_modules), "0" * 16)
    return gen, target, config


def _checksum(gen: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in gen.parameters()))


def _world():  # noqa: ANN202
    from umaf.generator.data import FingerprintSet
    from umaf.generator.train import World

    gen = torch.Generator().manual_seed(1)
    vectors = torch.nn.functional.normalize(torch.randn(6, 512, generator=gen), dim=-1)
    return World(NAMES, FingerprintSet(vectors, torch.tensor([0, 0, 1, 1, 2, 2]), ["m"] * 6), {})


def _worker(out_dir: str) -> None:
    """One process of the data-parallel run (started by ``torch.distributed.run``)."""
    from accelerate import Accelerator

    from umaf.generator.train import fit_end_to_end

    accelerator = Accelerator()
    gen, target, config = _generator()
    losses = fit_end_to_end(gen, None, target, _world(), config, accelerator)
    record = {"rank": accelerator.process_index, "world": accelerator.num_processes, "losses": losses,
              "checksum": _checksum(accelerator.unwrap_model(gen))}
    (Path(out_dir) / f"rank{accelerator.process_index}.json").write_text(json.dumps(record))


def test_two_processes_train_in_step(tmp_path: Path) -> None:
    """Two fresh CPU processes on gloo, as ``accelerate launch`` / ``torchrun`` start them."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      "from test_generator_e2e import _worker\n_worker(sys.argv[1])\n")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(port), str(script), str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world"] for r in records] == [2, 2]
    assert records[0]["losses"] != records[1]["losses"]  # each process drew its own batches
    assert all(len(r["losses"]) == 3 for r in records)
    assert records[0]["checksum"] == records[1]["checksum"]  # gradients were averaged: one model
    assert records[0]["checksum"] != _checksum(_generator()[0])  # and it was trained


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    from dataclasses import replace

    from accelerate import Accelerator

    from umaf.generator.train import fit_end_to_end

    checkpoint = tmp_path / "e2e-checkpoint.safetensors"
    gen, target, config = _generator()
    whole = fit_end_to_end(gen, None, target, _world(), replace(config, e2e_steps=4), Accelerator())
    first, target, config = _generator()
    part = fit_end_to_end(first, None, target, _world(), replace(config, e2e_steps=4, checkpoint_every=2),
                          Accelerator(), checkpoint)
    assert len(part) == 4 and checkpoint.is_file()
    again, target, config = _generator()  # a fresh process: the checkpoint holds all four steps
    resumed = fit_end_to_end(again, None, target, _world(), replace(config, e2e_steps=4), Accelerator(),
                             checkpoint)
    assert resumed == pytest.approx(part, rel=1e-5)
    assert _checksum(again) == pytest.approx(_checksum(first), rel=1e-6)
    assert whole == pytest.approx(part, rel=1e-5)  # checkpointing does not change what is trained
    more, target, config = _generator()
    longer = fit_end_to_end(more, None, target, _world(), replace(config, e2e_steps=6), Accelerator(),
                            checkpoint)
    assert len(longer) == 6 and longer[:4] == pytest.approx(part, rel=1e-5)  # goes on from step 4
    other, target, config = _generator()  # another learning rate: the checkpoint is not this run's
    fresh = fit_end_to_end(other, None, target, _world(), replace(config, e2e_steps=6, e2e_lr=1e-3),
                           Accelerator(), checkpoint)
    assert len(fresh) == 6 and fresh[0] == pytest.approx(whole[0], rel=1e-5) and fresh[5] != longer[5]


def test_the_replay_loss_trains_the_generated_delta_on_general_text() -> None:
    """The replay sentences run under the generated ΔW: their loss moves the generator (the target is
    frozen, so without the ΔW hooked in it could not), while the task loss of the first step is unchanged."""
    from dataclasses import replace

    from accelerate import Accelerator

    from umaf.generator.train import fit_end_to_end

    runs = {}
    for weight in (0.0, 1.0):
        gen, target, config = _generator()
        losses = fit_end_to_end(gen, None, target, _world(), replace(config, e2e_steps=1, e2e_replay=weight),
                                Accelerator())
        runs[weight] = (losses, _checksum(gen))
    assert runs[0.0][0] == pytest.approx(runs[1.0][0], rel=1e-6)
    assert runs[0.0][1] != pytest.approx(runs[1.0][1], rel=1e-9)
