"""engine.training.step.update_weights: the one optimizer update the trainer, the benchmark and the lab share."""
import math

import torch
import torch.nn as nn

from engine.training.step import StepParts, update_weights


def _parts(grad_clip=0.0, lr=1.0, loss=None):
    torch.manual_seed(0)
    model = nn.Conv2d(3, 1, 1)
    params = list(model.parameters())

    def mse(out, masks):
        return {"loss": ((out - masks) ** 2).mean()}

    return StepParts(model=model, loss=loss or mse, optimizer=torch.optim.SGD(params, lr=lr),
                     scaler=torch.amp.GradScaler("cpu", enabled=False), params=params,
                     device=torch.device("cpu"), grad_clip=grad_clip)


def _batch(seed=1, n=2):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 4, 4, generator=g), "mask": torch.rand(n, 1, 4, 4, generator=g)}


def _weights(parts):
    return torch.cat([p.detach().flatten().clone() for p in parts.params])


def test_a_finite_update_changes_the_weights_and_is_not_skipped():
    parts = _parts()
    before = _weights(parts)
    bad = update_weights(parts, [_batch()])
    assert not bool(bad) and not torch.equal(_weights(parts), before)


def test_a_non_finite_loss_skips_the_update():
    parts = _parts(loss=lambda out, masks: {"loss": out.mean() * math.nan})
    before = _weights(parts)
    assert bool(update_weights(parts, [_batch()]))
    assert torch.equal(_weights(parts), before)


def test_gradients_are_clipped_to_the_max_norm():
    parts = _parts(grad_clip=1e-3, lr=1.0)  # SGD with lr 1: the step is the clipped gradient
    before = _weights(parts)
    update_weights(parts, [_batch()])
    assert (_weights(parts) - before).norm() <= 1e-3 * (1 + 1e-4)


def test_micro_batches_update_with_their_mean_loss():
    one, two = _parts(), _parts()
    update_weights(one, [_batch(seed=1)])
    update_weights(two, [_batch(seed=1), _batch(seed=1)])  # the same batch twice: the same mean
    assert torch.allclose(_weights(one), _weights(two), atol=1e-6)


def test_observe_sees_each_micro_batch_terms_and_whether_it_was_finite():
    parts = _parts()
    seen = []
    update_weights(parts, [_batch(1), _batch(2)], lambda terms, out, finite: seen.append((terms["loss"], bool(finite))))
    assert len(seen) == 2 and all(ok for _, ok in seen)
