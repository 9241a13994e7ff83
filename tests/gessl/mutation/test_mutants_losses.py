"""gessl.losses helpers: checks, registry, Sinkhorn-Knopp, DINO centring, off-diagonal
(``docs/testing.md``)."""

from __future__ import annotations

import os
import re

import pytest
import torch

from gessl.losses import _base
from gessl.losses._base import (
    LossOutput,
    builtin_card_path,
    check_extra,
    check_positive,
    get_loss,
    register_loss,
)
from gessl.losses.clustering import dino_center_update, sinkhorn_knopp
from gessl.losses.redundancy import off_diagonal

f64 = torch.float64


def _full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def test_register_loss_wraps_checks_and_refuses_twice():
    def fn(z1, z2, scale: float = 1.0) -> LossOutput:
        return LossOutput(loss=scale * (z1 - z2).sum())

    try:
        w = register_loss("tmp_mutation_loss")(fn)
        assert w.loss_name == "tmp_mutation_loss"
        assert get_loss("tmp_mutation_loss") is w
        z = torch.ones(2, 3)
        assert float(w(z, 0 * z, scale=2.0).loss) == 12.0
        with pytest.raises(ValueError, match="tmp_mutation_loss"):
            w(z, z, temperature=0.1)
        with pytest.raises(ValueError, match=_full("loss 'tmp_mutation_loss' is registered twice")):
            register_loss("tmp_mutation_loss")(fn)
    finally:
        _base._REGISTRY.pop("tmp_mutation_loss", None)


def test_unknown_loss_lists_the_available_ones():
    names = ", ".join(_base.available_losses())
    with pytest.raises(ValueError, match=re.escape(f"unknown loss 'nope'; available: {names}")):
        get_loss("nope")


def test_builtin_card_path():
    p = builtin_card_path("infonce")
    assert p.replace(os.sep, "/").endswith("gessl/losses/cards/infonce.toml")
    assert os.path.isfile(p)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        builtin_card_path("nope")


def test_check_extra_messages_and_boundaries():
    like = torch.zeros(3, 4, dtype=f64)
    ok = torch.zeros(2, 4, dtype=f64)
    check_extra(ok, "queue", 4, like, rows_min=2)  # exactly rows_min rows
    check_extra(torch.zeros(1, 4, dtype=f64), "queue", 4, like)
    cases = [
        ([0.0], "queue must be a torch.Tensor, got list"),
        (torch.zeros(2, 4, dtype=f64)[:1], "queue needs at least 2 rows, got 1"),
        (torch.zeros(2, 4), "queue has dtype torch.float32 but the embeddings have torch.float64"),
        (
            torch.tensor([[0.0, 1, 2, float("nan")]] * 2, dtype=f64),
            "queue contains non-finite values (nan or inf)",
        ),
    ]
    for x, msg in cases:
        with pytest.raises(ValueError, match=_full(msg)):
            check_extra(x, "queue", 4, like, rows_min=2)
    # 5 rows of 4 columns pass a 4-row minimum (rows are shape[0], not shape[1])
    check_extra(torch.zeros(5, 4, dtype=f64), "queue", 4, like, rows_min=5)


def test_check_positive_messages():
    check_positive("t", 1)
    check_positive("t", 0.0, allow_zero=True)
    with pytest.raises(ValueError, match=_full("t must be a number, got True")):
        check_positive("t", True)
    with pytest.raises(ValueError, match=_full("t must be finite and > 0, got 0")):
        check_positive("t", 0)
    with pytest.raises(ValueError, match=_full("t must be finite and >= 0, got -1.0")):
        check_positive("t", -1.0, allow_zero=True)


def test_sinkhorn_arguments():
    s = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=f64)
    with pytest.raises(ValueError, match=r"^epsilon must be finite and > 0, got 0$"):
        sinkhorn_knopp(s, epsilon=0)
    for bad in (0, -1, 1.0, "3"):
        with pytest.raises(
            ValueError, match=_full(f"iterations must be an integer >= 1, got {bad!r}")
        ):
            sinkhorn_knopp(s, iterations=bad)
    # one iteration: columns to 1/K, then rows to 1/B, then scaled by B
    q = sinkhorn_knopp(s, epsilon=0.5, iterations=1)
    e = torch.exp(s / 0.5)
    e = e / e.sum(0, keepdim=True) / 3
    e = e / e.sum(1, keepdim=True) / 4
    torch.testing.assert_close(q, 4 * e, rtol=1e-12, atol=1e-14)


def test_dino_center_update_values_and_range():
    c = torch.tensor([1.0, 2.0], dtype=f64)
    t = torch.tensor([[3.0, 0.0], [5.0, 4.0]], dtype=f64)  # mean (4, 2)
    torch.testing.assert_close(
        dino_center_update(c, t), 0.9 * c + 0.1 * torch.tensor([4.0, 2.0], dtype=f64)
    )
    torch.testing.assert_close(dino_center_update(c, t, 0.0), torch.tensor([4.0, 2.0], dtype=f64))
    torch.testing.assert_close(dino_center_update(c, t, 1.0), c)
    torch.testing.assert_close(dino_center_update(c, t, 0.25), torch.tensor([3.25, 2.0], dtype=f64))
    for bad in (-0.1, 1.5, 2.0):
        with pytest.raises(ValueError, match=_full(f"momentum must be in [0, 1], got {bad!r}")):
            dino_center_update(c, t, bad)


def test_off_diagonal():
    m = torch.arange(9.0).reshape(3, 3)
    assert off_diagonal(m).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
    assert off_diagonal(torch.ones(1, 1)).shape == (0,)
    for bad in (torch.zeros(2, 3), torch.zeros(2, 2, 2), torch.zeros(3)):
        with pytest.raises(
            ValueError, match=_full(f"off_diagonal needs a square matrix, got {tuple(bad.shape)}")
        ):
            off_diagonal(bad)


def test_value_checks_default_on_in_a_fresh_thread():
    import threading

    from gessl.losses._base import no_value_checks, value_checks_enabled

    seen = []
    t = threading.Thread(target=lambda: seen.append(value_checks_enabled()))
    t.start()
    t.join()
    assert seen == [True]
    with no_value_checks():
        assert value_checks_enabled() is False
    assert value_checks_enabled() is True


def test_check_embeddings_task_batches_only_when_allowed():
    from gessl.losses._base import check_embeddings

    z3 = torch.zeros(2, 4, 3)
    check_embeddings(z3, z3, allow_tasks=True)
    with pytest.raises(ValueError, match=_full("z1 must have shape [N, D], got shape (2, 4, 3)")):
        check_embeddings(z3, z3)
    z4 = torch.zeros(1, 2, 4, 3)
    with pytest.raises(
        ValueError, match=_full("z1 must have shape [N, D] or [T, N, D], got shape (1, 2, 4, 3)")
    ):
        check_embeddings(z4, z4, allow_tasks=True)
    # the names pair the two tensors one to one
    with pytest.raises(ValueError, match="zip"):
        check_embeddings(z3[0], z3[0], names=("a", "b", "c"))


def test_check_embeddings_messages():
    from gessl.losses._base import check_embeddings

    z = torch.zeros(3, 2)
    check_embeddings(torch.zeros(3, 1), torch.zeros(3, 1))  # one feature is enough
    cases = [
        (([0.0], z), {}, "z1 must be a torch.Tensor, got list"),
        (
            (torch.zeros(3, 2, dtype=torch.long), z),
            {},
            "z1 must be a floating-point tensor, got torch.int64",
        ),
        ((torch.zeros(3, 0), torch.zeros(3, 0)), {}, "z1 has feature dimension 0"),
        (
            (torch.zeros(2, 3, 0), torch.zeros(2, 3, 0)),
            {"allow_tasks": True},
            "z1 has feature dimension 0",
        ),
    ]
    for args, kw, msg in cases:
        with pytest.raises(ValueError, match=_full(msg)):
            check_embeddings(*args, **kw)


def test_check_embeddings_pair_messages_name_both():
    from gessl.losses._base import check_embeddings

    with pytest.raises(
        ValueError, match=_full("a and b must have the same shape, got (3, 2) and (4, 2)")
    ):
        check_embeddings(torch.zeros(3, 2), torch.zeros(4, 2), names=("a", "b"))
    with pytest.raises(
        ValueError, match=_full("a and b have different dtypes: torch.float32, torch.float64")
    ):
        check_embeddings(torch.zeros(3, 2), torch.zeros(3, 2, dtype=f64), names=("a", "b"))


def test_sinkhorn_defaults_are_epsilon_0_05_and_three_iterations():
    s = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=f64)
    q = sinkhorn_knopp(s)
    torch.testing.assert_close(q, sinkhorn_knopp(s, epsilon=0.05, iterations=3), rtol=0, atol=0)
    assert not torch.allclose(q, sinkhorn_knopp(s, epsilon=0.05, iterations=4), rtol=0, atol=1e-12)
    assert not torch.allclose(q, sinkhorn_knopp(s, epsilon=1.05, iterations=3))
