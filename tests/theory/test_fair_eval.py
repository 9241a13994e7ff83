"""Each model at its own protocol (theory.fair_eval): calibration, tuned and fixed adaptation on
new samples, the budget curve, against hand-written references."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.sigma import kl_rows
from theory.fair_eval import GRID_LRS, GRID_STEPS, EvalSet, Protocol, calibrate, measure
from theory.fair_test import FairTest, build_model
from theory.floors import fit_floor

f64 = torch.float64


def _bayes_model(test: FairTest, scale: float = 1.0):
    """The linear two-headed model whose critic is the homogeneous family's Bayes critic
    −‖u − ρv‖²/(2σ_c²), its logits times ``scale``."""
    fam = test.task_family
    c2, s2 = fam.latent_scale**2, fam.noise**2
    rho, var = c2 / (c2 + s2), s2 * (2 * c2 + s2) / (c2 + s2)
    m = build_model(test, 0)
    eye = torch.eye(fam.dim)
    with torch.no_grad():
        w = torch.cat([eye, rho * eye]) / math.sqrt(2 * var) * math.sqrt(scale)
        m.projector[0].weight.copy_(w)
        m.projector[0].bias.zero_()
    return m


def _sets(test: FairTest, tasks: int, seed: int = 0):
    fam = test.task_family
    return (
        EvalSet.draw(fam, torch.Generator().manual_seed(100 + seed), tasks, test.n_samples),
        EvalSet.draw(fam, torch.Generator().manual_seed(200 + seed), tasks, test.n_samples),
    )


def _measure(test, methods, sets, **kw):
    val = [sets[0]] * len(methods)
    tst = [sets[1]] * len(methods)
    kw.setdefault("fixed", [Protocol(1, 0.1)])
    kw.setdefault("lookahead", 1)
    params = [dict(m.online_params()) for m in methods]
    return measure(methods[0], params, val, tst, **kw)


def test_the_bayes_critic_measures_zero_at_scale_one_and_its_accuracy_is_bayes():
    t = FairTest(family="homogeneous")
    sets = _sets(t, 24)
    (rec,) = _measure(t, [_bayes_model(t)], sets)
    assert rec["sigma_phi_raw"] < 1e-5 and rec["excess_phi_raw"] < 1e-5  # float32 rounding
    assert rec["beta_sigma"] == pytest.approx(1.0, abs=1e-3)
    assert rec["sigma_phi_calibrated"] < 1e-5
    lb = sets[1].lp
    bayes_acc = float((lb.argmax(-1) == torch.arange(16)).double().mean())
    assert rec["accuracy_phi"] == pytest.approx(bayes_acc, abs=1e-6)
    q = (sets[1].batch.query_a, sets[1].batch.query_b)
    floor = fit_floor(_bayes_model(t), _bayes_model(t).task_critic(), q, lb, "sigma")
    assert floor.value < 1e-8 and floor.converged


def test_calibration_finds_the_scale_a_model_is_off_by():
    """Logits at a third of the Bayes scale: raw σ well above 0, calibrated σ back at 0 with
    β = 3 chosen on the validation tasks (and measured on the others)."""
    t = FairTest(family="homogeneous")
    sets = _sets(t, 24)
    (rec,) = _measure(t, [_bayes_model(t, scale=1 / 3)], sets)
    assert rec["sigma_phi_raw"] > 0.05
    assert rec["beta_sigma"] == pytest.approx(3.0, rel=2e-3)
    assert rec["beta_excess"] == pytest.approx(3.0, rel=2e-3)
    assert rec["sigma_phi_calibrated"] < 1e-5 and rec["excess_phi_calibrated"] < 1e-5
    # calibrate() itself: the σ it reports is the test tasks' at the validation tasks' β
    logits = torch.randn(5, 4, 4, dtype=f64, generator=torch.Generator().manual_seed(0))
    target = torch.log_softmax(2.0 * logits, -1)
    beta, value = calibrate(logits, target, logits, target, "sigma")
    assert beta == pytest.approx(2.0, rel=1e-3) and value < 1e-7


def _hand_sigma_after(m, s: EvalSet, k: int, lr: float, direction: str = "sigma") -> float:
    """σ per query after k SGD steps of size lr on each task's support views (float64)."""
    total = 0.0
    b = s.batch
    for i in range(b.n_tasks):
        p = {n: v.detach().double() for n, v in m.online_params().items()}
        for _ in range(k):
            q = {n: v.requires_grad_(True) for n, v in p.items()}
            loss = m.loss(q, b.support_a[i], b.support_b[i]).loss
            g = torch.autograd.grad(loss, list(q.values()))
            p = {n: (v - lr * gn).detach() for (n, v), gn in zip(q.items(), g)}
        with torch.no_grad():
            lp = m.task_critic().log_probs(m.embed(p, b.query_a[i]), m.embed(p, b.query_b[i]))
        kl = kl_rows(lp, s.lp[i]) if direction == "sigma" else kl_rows(s.lp[i], lp)
        total += float(kl.sum()) / b.n_samples
    return total / b.n_tasks


def test_fixed_tuned_and_budget_values_are_hand_written_sgd_on_new_samples():
    t = FairTest(family="subspace")
    sets = _sets(t, 6)
    m = build_model(t, 3)
    (rec,) = _measure(t, [m], sets, fixed=[Protocol(1, 0.2), Protocol(2, 0.1)], budget=4)
    fixed = rec["fixed"]
    assert set(fixed) == {"K=1,α=0.2", "K=2,α=0.1"}
    assert fixed["K=1,α=0.2"]["sigma_adapted"] == pytest.approx(
        _hand_sigma_after(m, sets[1], 1, 0.2), rel=2e-5
    )
    assert fixed["K=2,α=0.1"]["excess_adapted"] == pytest.approx(
        _hand_sigma_after(m, sets[1], 2, 0.1, "sigma_excess"), rel=2e-5
    )
    # tuned: the grid point with the lowest validation σ, measured on the test tasks
    grid = [(k, lr) for k in GRID_STEPS for lr in GRID_LRS]
    on_val = {p: _hand_sigma_after(m, sets[0], *p) for p in grid}
    best = min(on_val, key=on_val.get)
    assert tuple(rec["protocol_sigma"]) == best
    assert rec["sigma_adapted_tuned"] == pytest.approx(
        _hand_sigma_after(m, sets[1], *best), rel=2e-5
    )
    # budget curve: each k at its best α on validation
    for k in range(1, 5):
        alpha = min(GRID_LRS, key=lambda lr, k=k: _hand_sigma_after(m, sets[0], k, lr))
        assert rec["budget_alpha"][k - 1] == alpha
        assert rec["budget_sigma"][k - 1] == pytest.approx(
            _hand_sigma_after(m, sets[1], k, alpha), rel=2e-5
        )


def test_new_samples_are_other_latents_than_the_support_s():
    """The query of an evaluation set comes from new latents of the same tasks: its views do not
    correlate with the support's sample by sample, the same-latents views do."""
    fam = FairTest(family="homogeneous").task_family
    s = EvalSet.draw(fam, torch.Generator().manual_seed(0), 200, 16)

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert corr(s.batch.support_a, s.same_query[0]) > 0.4
    assert abs(corr(s.batch.support_a, s.batch.query_a)) < 0.02
    # both queries are tasks of the same parameters: the same noise level, the same Bayes model
    torch.testing.assert_close(
        s.lp, fam.bayes_log_probs(s.batch.query_a, s.batch.query_b, s.params)
    )


def test_the_sigma_term_and_the_same_latents_measure():
    t = FairTest(family="subspace")
    sets = _sets(t, 5)
    m = build_model(t, 1)
    (rec,) = _measure(t, [m], sets, fixed=[Protocol(1, 0.1)], lookahead=1)
    b = sets[1].batch
    total = same = 0.0
    for i in range(b.n_tasks):
        ps = []
        p = {n: v.detach().double() for n, v in m.online_params().items()}
        for _ in range(2):
            q = {n: v.requires_grad_(True) for n, v in p.items()}
            g = torch.autograd.grad(
                m.loss(q, b.support_a[i], b.support_b[i]).loss, list(q.values())
            )
            p = {n: (v - 0.1 * gn).detach() for (n, v), gn in zip(q.items(), g)}
            ps.append(p)
        with torch.no_grad():
            lp = [
                m.task_critic().log_probs(m.embed(x, b.query_a[i]), m.embed(x, b.query_b[i]))
                for x in ps
            ]
            total += float(kl_rows(lp[0], lp[1]).sum()) / 16
            qa, qb = sets[1].same_query[0][i], sets[1].same_query[1][i]
            ls = m.task_critic().log_probs(m.embed(ps[0], qa), m.embed(ps[0], qb))
            same += float(kl_rows(ls, sets[1].lp_same[i]).sum()) / 16
    assert rec["sigma_term"] == pytest.approx(total / b.n_tasks, rel=1e-4)
    assert rec["sigma_adapted_same_latents"] == pytest.approx(same / b.n_tasks, rel=2e-5)
