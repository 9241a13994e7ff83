"""Training runs: every method, resume bit for bit, a non-finite loss stops cleanly."""

from __future__ import annotations

import pytest
import torch

from gessl.data import GaussianLatentTasks, SyntheticImageTasks
from gessl.methods import available_methods, build_method
from gessl.models import MLP, SmallCNN
from gessl.trainer import GeSSLConfig, NonFiniteLossError, Trainer
from gessl.trainer.checkpoint import load_checkpoint


def _trainer(method="simclr", backbone="mlp", checkpoint_path=None, **cfg) -> Trainer:
    torch.manual_seed(0)
    if backbone == "mlp":
        net, sampler = MLP(8, width=16), GaussianLatentTasks(dim=8)
    else:
        net, sampler = SmallCNN(1, width=8), SyntheticImageTasks(size=8)
    m = build_method(method, net, proj_dims=(16, 8))
    cfg.setdefault("tasks_per_step", 2)
    return Trainer(m, sampler, GeSSLConfig(**cfg), n_samples=8, checkpoint_path=checkpoint_path)


def _params(tr: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tr.method.state_dict().items()}


@pytest.mark.parametrize("method", available_methods())
@pytest.mark.parametrize("backbone", ["mlp", "cnn"])
def test_every_method_trains_with_gessl(method, backbone):
    tr = _trainer(method, backbone, inner_steps=1, lookahead_steps=1, sigma_weight=0.5)
    before = _params(tr)
    logs = tr.fit(3, progress=False)
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(log["loss"])) for log in logs)
    after = _params(tr)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("backbone.") for k in moved) and any(
        k.startswith("projector.") for k in moved
    )


@pytest.mark.parametrize(
    "options",
    [
        {"order": "second"},
        {"adapt": "projector"},
        {"threshold": "learned"},
        {"kl_direction": "sigma_excess"},
        {"batching": "loop"},
        {"mode": "plain"},
        {"optimizer": "sgd", "outer_lr": 0.05},
    ],
)
def test_options_train(options):
    tr = _trainer("byol", **options)
    logs = tr.fit(2, progress=False)
    assert logs[-1]["step"] == 2.0
    if options.get("threshold") == "learned":
        assert tr.threshold_net is not None
        assert any(
            p.grad is not None and float(p.grad.abs().max()) > 0
            for p in tr.threshold_net.parameters()
        )


def test_momentum_state_updates_once_per_outer_step():
    tr = _trainer("moco", inner_steps=2)
    ptr0 = int(tr.method.queue_ptr)
    target0 = tr.method.target_projector[0].weight.detach().clone()
    tr.train_step()
    # both views' keys of M tasks × N samples enter the queue once (not once per inner step)
    assert int(tr.method.queue_ptr) == (ptr0 + 2 * 2 * 8) % tr.method.queue.shape[0]
    assert not torch.equal(target0, tr.method.target_projector[0].weight)


def test_resume_is_bit_for_bit(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    full = _trainer("byol", inner_steps=1, lookahead_steps=1)
    full.fit(6, progress=False)
    first = _trainer("byol", inner_steps=1, lookahead_steps=1, checkpoint_path=path)
    first.fit(3, checkpoint_every=3, progress=False)
    resumed = _trainer("byol", inner_steps=1, lookahead_steps=1, checkpoint_path=path)
    torch.manual_seed(12345)  # the global RNG state is restored from the checkpoint too
    resumed.load()
    assert resumed.step == 3
    resumed.fit(3, progress=False)
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit, buffers included
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_resume_refuses_other_options(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    _trainer(checkpoint_path=path).save()
    other = _trainer(checkpoint_path=path, inner_steps=3)
    with pytest.raises(ValueError, match="inner_steps"):
        other.load()


class _NaNAtStep:
    """A sampler whose tasks contain a NaN from the ``bad``-th call on."""

    def __init__(self, bad: int) -> None:
        self.inner, self.calls, self.bad = GaussianLatentTasks(dim=8), 0, bad

    def sample(self, n_tasks, n_samples, gen):
        self.calls += 1
        batch = self.inner.sample(n_tasks, n_samples, gen)
        if self.calls >= self.bad:
            batch.query_a[0, 0, 0] = float("nan")
        return batch


def test_non_finite_loss_stops_with_a_named_message_and_keeps_the_checkpoint(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    torch.manual_seed(0)
    m = build_method("simclr", MLP(8, width=16), proj_dims=(16, 8))
    tr = Trainer(
        m, _NaNAtStep(bad=4), GeSSLConfig(tasks_per_step=2), n_samples=8, checkpoint_path=path
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite \w+ = nan at outer step 4") as err:
        tr.fit(6, checkpoint_every=1, progress=False)
    assert "last good checkpoint" in str(err.value) and path in str(err.value)
    assert tr.step == 3  # no update was applied at step 4
    state = load_checkpoint(path)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
    resumed = Trainer(
        build_method("simclr", MLP(8, width=16), proj_dims=(16, 8)),
        GaussianLatentTasks(dim=8),
        GeSSLConfig(tasks_per_step=2),
        n_samples=8,
    )
    resumed.load(path)
    assert resumed.step == 3


def test_config_validation():
    with pytest.raises(ValueError, match="order"):
        GeSSLConfig(order="third")
    with pytest.raises(ValueError, match="inner_steps"):
        GeSSLConfig(inner_steps=-1)
    with pytest.raises(ValueError, match="inner_steps >= 1"):
        GeSSLConfig(threshold="learned", inner_steps=0)
    with pytest.raises(ValueError, match="unknown option 'tau'"):
        build_method("simclr", MLP(4), tau=0.1)
    with pytest.raises(ValueError, match="unknown method"):
        build_method("simclr2", MLP(4))
