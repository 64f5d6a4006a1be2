"""The shared learning-rate schedule: warm-up, cosine decay, floor."""

from __future__ import annotations

import pytest
import torch

from umaf.training import warmup_cosine, warmup_cosine_scheduler


def test_warms_up_then_decays_to_the_floor_and_stays() -> None:
    assert warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.1) == pytest.approx(0.55)  # half way down the cosine
    assert warmup_cosine(100, 100, 10, 0.1) == warmup_cosine(500, 100, 10, 0.1) == pytest.approx(0.1)


def test_without_warm_up_it_starts_at_the_peak() -> None:
    assert warmup_cosine(0, 100, 0, 0.05) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 0, 0.05) == pytest.approx(0.05)


def test_scheduler_steps_the_optimizer_learning_rate() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = warmup_cosine_scheduler(optimizer, steps=10, warmup=2, floor=0.0)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([1.0, 2.0, 2.0]) and rates[-1] < rates[3] < rates[2]


def _tiny_setup():
    from umaf.encoding import encode_example, pad_id
    from umaf.models import build_tiny

    loaded = build_tiny("llama", "xs", seed=3)
    items = [encode_example(loaded.tokenizer, "decoder", f"{w} ->", f" {w}s") for w in ("cat", "dog", "owl")]
    optimizer = torch.optim.AdamW(loaded.model.parameters(), lr=1e-2)
    scheduler = warmup_cosine_scheduler(optimizer, steps=4, warmup=1, floor=0.1)
    return loaded, items, pad_id(loaded.tokenizer), optimizer, scheduler


def test_fit_batches_runs_the_steps_and_adds_the_extra_loss() -> None:
    from umaf.errors import UmafError
    from umaf.training import fit_batches

    loaded, items, pad, optimizer, scheduler = _tiny_setup()
    calls, seen = [], []
    extra = lambda: calls.append(1) or torch.zeros((), requires_grad=True)  # noqa: E731
    endless = iter(lambda: items, None)
    losses = fit_batches(loaded.model, endless, pad, optimizer, scheduler, 4, progress=False,
                         extra_loss=extra, on_loss=lambda step, loss: seen.append(step))  # fmt: skip
    assert len(losses) == 4 and seen == [0, 1, 2, 3] and len(calls) == 4
    assert losses[-1] < losses[0] and not loaded.model.training
    broken = torch.optim.SGD(loaded.model.parameters(), lr=1e9)
    with pytest.raises(UmafError, match="training diverged at step"):
        fit_batches(loaded.model, endless, pad, broken, warmup_cosine_scheduler(broken, 50, 0, 1.0), 50,
                    progress=False)  # fmt: skip
