"""gessl.trainer.trainer: the outer step, the fit loop and the trainer's checkpoints.

Each test asserts a number (a logged loss, a gradient, a parameter after one SGD step), an exact
message or a behaviour (what is saved when, what a progress bar shows, which parameters the
optimiser steps, how ranks share work) that a one-token change of :mod:`gessl.trainer.trainer`
would get wrong (``docs/testing.md``). Two ranks run in-process: one thread each, with a small
stand-in for the four ``torch.distributed`` calls the trainer makes (``broadcast`` from a source
rank, ``all_reduce`` as a sum); the two-process gloo run is ``tests/gessl/trainer``'s.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import threading
import time

import pytest
import torch

import gessl.adapt.batching as batching_mod
import gessl.trainer.trainer as trainer_mod
from gessl.data import GaussianLatentTasks
from gessl.data.synthetic import TaskBatch
from gessl.methods import build_method
from gessl.methods.catalog import SimCLR
from gessl.models import MLP
from gessl.trainer import GeSSLConfig, NonFiniteLossError, Trainer
from gessl.trainer.checkpoint import load_checkpoint
from tests.gessl.trainer.helpers import make_trainer

f64 = torch.float64


def _full(msg: str) -> str:
    """A regex matching exactly ``msg``."""
    return "^" + re.escape(msg) + "$"


def _params(tr: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tr.method.online_params().items()}


def _plain_reference(tr: Trainer, batch: TaskBatch) -> tuple[float, dict[str, torch.Tensor]]:
    """Mean over tasks of ``(ℓ(query) + ℓ(support)) / 2`` and its gradient, by ``autograd``
    on a loop over the tasks (no ``torch.func``)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in _params(tr).items()}
    m = batch.n_tasks
    total = sum(
        (
            tr.method.loss(leaves, batch.query_a[i], batch.query_b[i]).loss
            + tr.method.loss(leaves, batch.support_a[i], batch.support_b[i]).loss
        )
        / 2
        for i in range(m)
    )
    mean = total / m
    grads = torch.autograd.grad(mean, list(leaves.values()))
    return float(mean.detach()), dict(zip(leaves, grads))


# ---------------------------------------------------------------------------- the plain step
def test_plain_step_logs_the_mean_of_query_and_support_losses_and_steps_by_its_gradient():
    tr = make_trainer(mode="plain", optimizer="sgd", outer_lr=0.1)
    assert tr.cfg.use_support_in_plain  # the default: support and query views
    batch = tr.sample()
    before = _params(tr)
    loss, grads = _plain_reference(tr, batch)
    log = tr.train_step(batch)
    assert log["loss"] == pytest.approx(loss, rel=1e-12)
    assert log["ssl"] == pytest.approx(loss, rel=1e-12)
    assert log["support_loss"] == pytest.approx(loss, rel=1e-12)
    assert log["kl"] == 0.0
    assert log["step"] == 1.0
    after = _params(tr)
    assert max(float(g.abs().max()) for g in grads.values()) > 1e-3  # a real gradient
    for k, g in grads.items():
        torch.testing.assert_close(after[k], before[k] - 0.1 * g, rtol=1e-10, atol=1e-13)


def test_a_step_gradient_read_by_the_caller_is_not_zeroed_by_the_next_step():
    tr = make_trainer(mode="plain", optimizer="sgd", outer_lr=0.1)
    batch = tr.sample()
    _, grads = _plain_reference(tr, batch)
    tr.train_step(batch)
    kept = {k: p.grad for k, p in tr.method.online_params().items()}  # e.g. logged by reference
    tr.train_step()
    for k, g in grads.items():
        torch.testing.assert_close(kept[k], g, rtol=1e-10, atol=1e-13)
        assert tr.method.online_params()[k].grad is not kept[k]


def test_step_log_times_the_step():
    tr = make_trainer(mode="plain")
    t0 = time.perf_counter()
    log = tr.train_step()
    elapsed = time.perf_counter() - t0
    assert isinstance(log["seconds"], float)
    assert 0.0 < log["seconds"] <= elapsed


def test_update_state_receives_the_query_views_and_their_targets():
    seen: list[tuple] = []

    class Recording(SimCLR):
        def update_state(self, a, b, targets):
            seen.append((a, b, targets))

    torch.manual_seed(0)
    m = Recording(MLP(5, width=8), proj_dims=(8, 4)).double()
    tr = Trainer(m, GaussianLatentTasks(dim=5), GeSSLConfig(tasks_per_step=2), n_samples=4)
    batch = tr.sample()
    tr.train_step(batch)
    assert len(seen) == 1
    a, b, targets = seen[0]
    assert a is batch.query_a and b is batch.query_b
    assert targets is None  # SimCLR has no momentum targets


# ---------------------------------------------------------------------------- targets
def test_gessl_uses_support_targets_even_when_plain_would_not():
    tr = make_trainer("byol", tasks_per_step=2, use_support_in_plain=False)
    batch = tr.sample()
    assert set(tr._targets(batch)) == {"q_t_a", "q_t_b", "s_t_a", "s_t_b"}
    log = tr.train_step(batch)  # the inner steps read the support targets
    assert log["step"] == 1.0 and torch.isfinite(torch.tensor(log["loss"]))
    plain = make_trainer("byol", tasks_per_step=2, mode="plain", use_support_in_plain=False)
    assert set(plain._targets(batch)) == {"q_t_a", "q_t_b"}
    plain_support = make_trainer("byol", tasks_per_step=2, mode="plain")
    assert set(plain_support._targets(batch)) == {"q_t_a", "q_t_b", "s_t_a", "s_t_b"}


# ---------------------------------------------------------------------------- non-finite
def test_non_finite_message_names_the_term_the_step_and_the_checkpoint(tmp_path):
    tr = make_trainer(mode="plain", optimizer="sgd")
    good = tr.sample()
    nan = float("nan")
    bad = TaskBatch(
        good.support_a, good.support_b, torch.full_like(good.query_a, nan), good.query_b
    )
    before = _params(tr)
    with pytest.raises(
        NonFiniteLossError,
        match=_full("non-finite ssl = nan at outer step 1; training stopped before the update"),
    ):
        tr.train_step(bad)
    assert tr.step == 0 and not tr.history
    for k, v in _params(tr).items():
        assert torch.equal(v, before[k])
    tr.train_step(good)
    path = tr.save(str(tmp_path / "good.pt"))
    with pytest.raises(
        NonFiniteLossError,
        match=_full(
            "non-finite ssl = nan at outer step 2; training stopped before the update; "
            f"last good checkpoint: {path}"
        ),
    ):
        tr.train_step(bad)


# ---------------------------------------------------------------------------- batching
def test_batching_loop_never_calls_vmap_and_matches_vmap(monkeypatch):
    batch = make_trainer(tasks_per_step=3).sample()
    cases = [
        {"mode": "plain"},  # plain loss: gradient of the sum
        {},  # first order, no threshold: the split inner/outer passes
        {"order": "second"},  # nested objective: per-task gradients
    ]
    vmapped = [make_trainer(optimizer="sgd", **c).train_step(batch) for c in cases]

    def no_vmap(*args, **kwargs):
        raise AssertionError("torch.func.vmap called with batching='loop'")

    monkeypatch.setattr(batching_mod, "vmap", no_vmap)
    for c, ref in zip(cases, vmapped):
        log = make_trainer(optimizer="sgd", batching="loop", **c).train_step(batch)
        assert log["loss"] == pytest.approx(ref["loss"], rel=1e-10)
        assert log["kl"] == pytest.approx(ref["kl"], rel=1e-10, abs=1e-14)


def _count_vmap(monkeypatch) -> list[int]:
    calls = [0]
    real = batching_mod.vmap

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(batching_mod, "vmap", counting)
    return calls


def test_batching_vmap_batches_the_inner_pass_and_the_nested_gradient(monkeypatch):
    calls = _count_vmap(monkeypatch)
    make_trainer(order="second").train_step()
    assert calls[0] == 1  # vmap(grad(nested objective)) over the tasks
    calls[0] = 0
    make_trainer().train_step()
    assert calls[0] == 2  # the split inner pass, then the outer loss inside grad(sum)


@pytest.mark.parametrize("cfg", [{"mode": "plain"}, {}], ids=["plain", "first-order-split"])
def test_vmap_takes_one_gradient_of_the_loss_summed_over_tasks(monkeypatch, cfg):
    """Without inner gradients the trainer differentiates Σ_tasks loss once (one accumulated
    gradient for the shared parameters), not each task's loss under vmap."""
    differentiated: list[float] = []
    real = batching_mod.grad

    def spy(fn, *args, **kwargs):
        def recorded(*a):
            out = fn(*a)
            differentiated.append(float(out[0].detach()))  # fails inside vmap: a per-task value
            return out

        return real(recorded, *args, **kwargs)

    monkeypatch.setattr(batching_mod, "grad", spy)
    tr = make_trainer(tasks_per_step=3, **cfg)
    log = tr.train_step()
    assert differentiated == [pytest.approx(3 * log["loss"], rel=1e-12)]


# ---------------------------------------------------------------------------- construction
def test_default_samples_per_task_is_16():
    torch.manual_seed(0)
    m = build_method("simclr", MLP(5, width=8), proj_dims=(8, 4)).double()
    tr = Trainer(m, GaussianLatentTasks(dim=5), GeSSLConfig(tasks_per_step=2))
    assert tr.n_samples == 16
    assert tuple(tr.sample().query_a.shape) == (2, 16, 5)


def test_threshold_net_exists_only_for_gessl_with_a_learned_threshold():
    assert make_trainer().threshold_net is None
    assert make_trainer(mode="plain", threshold="learned").threshold_net is None
    assert make_trainer(mode="plain", threshold="learned").state_dict()["threshold"] is None
    net = make_trainer(threshold="learned", threshold_hidden=7).threshold_net
    assert net is not None and tuple(net.net[0].weight.shape) == (7, 3)


def test_adapt_projector_adapts_the_head_and_keeps_the_backbone_fixed():
    tr = make_trainer(adapt="projector")
    names = list(tr.method.online_params())
    head = [k for k in names if not k.startswith("backbone.")]
    assert tr.adapt_names == head and head
    assert tr.fixed_names == [k for k in names if k.startswith("backbone.")]
    assert tr.fixed_names
    every = make_trainer()
    assert every.adapt_names == names and every.fixed_names == []


def test_optimiser_steps_the_method_and_the_threshold_net():
    tr = make_trainer(threshold="learned", optimizer="sgd", outer_lr=0.5)
    stepped = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    online = list(tr.method.online_params().values())
    threshold = list(tr.threshold_net.parameters())
    assert stepped == {id(p) for p in online + threshold}
    before = _params(tr)
    tr.train_step()
    moved = [k for k, v in _params(tr).items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in moved)


def test_a_new_trainer_has_no_last_good_checkpoint():
    assert make_trainer().last_good_checkpoint is None


# ---------------------------------------------------------------------------- fit
def test_fit_saves_only_every_checkpoint_every_steps(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    tr = make_trainer(tasks_per_step=2)
    tr.checkpoint_path = path
    tr.fit(2, progress=False)  # checkpoint_every defaults to 0: never
    assert not os.path.exists(path)
    tr.fit(3, checkpoint_every=2, progress=False)  # steps 3, 4, 5: saved at step 4 only
    assert load_checkpoint(path)["step"] == 4
    assert tr.last_good_checkpoint == path


def test_fit_calls_the_callback_with_each_step_log():
    seen: list = []
    tr = make_trainer(tasks_per_step=2)
    history = tr.fit(2, progress=False, callback=seen.append)
    assert len(seen) == 2 and all(a is b for a, b in zip(seen, history))
    assert [log["step"] for log in seen] == [1.0, 2.0]


def test_fit_shows_a_progress_bar_by_default(monkeypatch, capfd):
    monkeypatch.setenv("GESSL_PROGRESS", "1")  # as on a terminal
    capfd.readouterr()
    tr = make_trainer(tasks_per_step=2)
    tr.fit(2)
    err = capfd.readouterr().err
    last = tr.history[-1]
    assert "gessl: " in err  # desc = the mode
    assert "step/s" in err  # unit
    assert f"loss={last['loss']:.4f}" in err and f"sigma={last['kl']:.4f}" in err
    plain = make_trainer(tasks_per_step=2, mode="plain")
    plain.fit(1, progress=True)
    assert "plain: " in capfd.readouterr().err


def test_fit_progress_false_shows_no_bar(monkeypatch, capfd):
    monkeypatch.setenv("GESSL_PROGRESS", "1")
    capfd.readouterr()
    make_trainer(tasks_per_step=2).fit(2, progress=False)
    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------------------- save / load
def test_save_without_a_path_is_refused():
    tr = make_trainer()
    with pytest.raises(ValueError, match=_full("no checkpoint path given")):
        tr.save()


def test_load_of_a_missing_checkpoint_names_the_path(tmp_path):
    missing = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match=_full(f"no checkpoint at {missing!r}")):
        make_trainer().load(missing)
    with pytest.raises(FileNotFoundError, match=_full("no checkpoint at None")):
        make_trainer().load()


def test_load_names_the_differing_options_and_records_the_checkpoint(tmp_path):
    path = str(tmp_path / "a.pt")
    tr = make_trainer(tasks_per_step=2)
    tr.train_step()
    tr.save(path)
    other = make_trainer(tasks_per_step=2, outer_lr=2e-3)
    with pytest.raises(
        ValueError, match=_full("checkpoint was written with different options: ['outer_lr']")
    ):
        other.load(path)
    same = make_trainer(tasks_per_step=2)
    assert same.last_good_checkpoint is None
    same.load(path)
    assert same.last_good_checkpoint == path and same.step == 1


def test_load_restores_the_threshold_net(tmp_path):
    path = str(tmp_path / "t.pt")
    tr = make_trainer(tasks_per_step=2, threshold="learned")
    tr.train_step()
    tr.save(path)
    saved = copy.deepcopy(tr.threshold_net.state_dict())
    with torch.no_grad():
        for p in tr.threshold_net.parameters():
            p.add_(1.0)
    tr.load(path)
    for k, v in tr.threshold_net.state_dict().items():
        assert torch.equal(v, saved[k])


# ---------------------------------------------------------------------------- two ranks
class _TwoRanks:
    """``torch.distributed`` for ranks run as threads of this process (as the trainer uses it).

    ``broadcast(t, src)`` copies rank ``src``'s tensor into every rank's; ``all_reduce(t)`` sums
    the ranks' tensors (rank 0 + rank 1). Outside the rank threads it reports "not initialized".
    """

    def __init__(self, world: int = 2) -> None:
        self.world = world
        self._local = threading.local()
        self._barrier = threading.Barrier(world, timeout=20)
        self._slots: list = [None] * world
        self.calls = {"broadcast": 0, "all_reduce": 0}

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return hasattr(self._local, "rank")

    def get_rank(self) -> int:
        return self._local.rank

    def get_world_size(self) -> int:
        return self.world

    def _exchange(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        self._slots[self._local.rank] = tensor.detach().clone()
        self._barrier.wait()
        values = list(self._slots)
        self._barrier.wait()
        return values

    def broadcast(self, tensor: torch.Tensor, src: int) -> None:
        values = self._exchange(tensor)
        if self._local.rank == 0:
            self.calls["broadcast"] += 1
        tensor.copy_(values[src])

    def all_reduce(self, tensor: torch.Tensor) -> None:
        values = self._exchange(tensor)
        if self._local.rank == 0:
            self.calls["all_reduce"] += 1
        tensor.copy_(values[0] + values[1])

    def run(self, fn):
        """``fn(rank)`` on every rank at once; the results by rank, or the first error."""
        results: list = [None] * self.world
        errors: list[BaseException] = []

        def body(rank: int) -> None:
            self._local.rank = rank
            try:
                results[rank] = fn(rank)
            except BaseException as err:
                errors.append(err)
                # a rank that failed makes the other's next collective fail at once (else the
                # test would wait out the barrier's timeout)
                self._barrier.abort()
                return
            # the ranks finish together: a rank done while the other is still inside a
            # collective (they disagree on the number of collectives) leaves that collective's
            # second wait without a partner, which breaks at the barrier's timeout. (Aborting
            # here instead raced: it could break the last collective's barrier before the other
            # rank had woken from it, failing a correct run.)
            with contextlib.suppress(threading.BrokenBarrierError):
                self._barrier.wait()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if errors:
            raise errors[0]
        return results


def _method(seed: int):
    torch.manual_seed(seed)
    return build_method("byol", MLP(5, width=8), proj_dims=(8, 4)).double()


def test_two_ranks_start_from_rank_0s_parameters_state_and_threshold_net(monkeypatch):
    ranks = _TwoRanks()
    monkeypatch.setattr(trainer_mod, "dist", ranks)
    methods = [_method(10), _method(11)]  # the ranks' own initialisations differ
    expected = copy.deepcopy(methods[0].state_dict())
    assert not torch.equal(
        methods[1].state_dict()["backbone.net.0.weight"], expected["backbone.net.0.weight"]
    )
    real_net = trainer_mod.ThresholdNet
    nets = []
    for seed in (20, 21):
        torch.manual_seed(seed)
        nets.append(real_net(16).double())
    expected_net = copy.deepcopy(nets[0].state_dict())
    monkeypatch.setattr(trainer_mod, "ThresholdNet", lambda hidden: nets[ranks.get_rank()])
    cfg = GeSSLConfig(tasks_per_step=3, threshold="learned")

    def build(rank: int):
        tr = Trainer(methods[rank], GaussianLatentTasks(dim=5), cfg, n_samples=4)
        return tr.rank, tr.world, tr.method.state_dict(), tr.threshold_net.state_dict()

    results = ranks.run(build)
    for rank, (r, w, state, net) in enumerate(results):
        assert (r, w) == (rank, 2)
        for k, v in expected.items():
            assert torch.equal(state[k], v), (rank, k)
        for k, v in expected_net.items():
            assert torch.equal(net[k], v), (rank, k)
    assert ranks.calls["broadcast"] == len(expected) + len(expected_net)


def test_two_ranks_share_the_tasks_and_give_the_one_process_step(monkeypatch):
    cfg = GeSSLConfig(tasks_per_step=3, optimizer="sgd", outer_lr=0.2, seed=3)
    single = Trainer(_method(10), GaussianLatentTasks(dim=5), cfg, n_samples=4)
    single.fit(2, progress=False)
    ranks = _TwoRanks()
    monkeypatch.setattr(trainer_mod, "dist", ranks)
    methods = [_method(10), _method(11)]
    shards: list = [[], []]
    real_grads = trainer_mod.Trainer.task_gradients

    def recording(self, batch):
        shards[self.rank].append(batch.n_tasks)
        return real_grads(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "task_gradients", recording)

    def train(rank: int):
        tr = Trainer(methods[rank], GaussianLatentTasks(dim=5), cfg, n_samples=4)
        tr.fit(2, progress=False)
        return tr.method.state_dict(), tr.history

    results = ranks.run(train)
    assert shards == [[1, 1], [2, 2]]  # 3 tasks: rank 0 the first one, rank 1 the other two
    ref = single.method.state_dict()
    for state, history in results:
        for k, v in ref.items():
            # float rounding only: sharded and whole-batch matrix products sum in other orders
            torch.testing.assert_close(state[k], v, rtol=1e-9, atol=1e-11)
        for mine, theirs in zip(history, single.history):
            assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-10)
            assert mine["kl"] == pytest.approx(theirs["kl"], rel=1e-10, abs=1e-13)
    assert ranks.calls["all_reduce"] > 0
