"""The shared learning-rate schedule: warm-up, cosine decay, floor."""

from __future__ import annotations

import pytest
import torch

from umaf.schedule import warmup_cosine, warmup_cosine_scheduler


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
