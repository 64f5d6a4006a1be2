"""What the interpolator learns from: zoo fingerprints (:mod:`umaf.zoo.fingerprints`, cached there) of
the training capabilities chosen here; nothing held out (:func:`umaf.capabilities.is_held_out`)."""

from __future__ import annotations

from umaf.capabilities import family_instances, is_held_out, training_capabilities, training_families


def default_capabilities(n_family_instances: int = 4, seed: int = 0) -> list[str]:
    """Training built-ins plus ``n_family_instances`` instances of every family: nothing held out."""
    names = list(training_capabilities())
    for family in training_families():
        names += [c.name for c in family_instances(family, n_family_instances, seed=seed)]
    return [n for n in names if not is_held_out(n)]
