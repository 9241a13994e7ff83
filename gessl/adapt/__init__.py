"""Task-specific adaptation, written once: the inner SGD step, K steps, the look-ahead, and
GeSSL's first- and second-order per-task objectives (``docs/training.md``, "The adaptation
engine").

* :mod:`gessl.adapt.sgd` — :class:`Adapter`: the one SGD step and loop, with two backends of the
  same step (dense per-task parameters; linear layers in factored low-rank form);
* :mod:`gessl.adapt.linear` — the factored form: which weights, the function mode, the dry runs;
* :mod:`gessl.adapt.objective` — :class:`TaskObjective`: GeSSL's objective of one task, first
  order (split) and nested (second order, threshold network), and the plain arm's loss;
* :mod:`gessl.adapt.batching` — over the tasks of a batch: ``vmap`` or a loop, summed gradients;
* :mod:`gessl.adapt.evaluate` — :func:`adapt_tasks`: test-time adaptation for measuring.

Everything takes plain values (α, K, λ, γ, a critic, a KL direction) and a
:class:`gessl.tasks.TaskBatch`; the trainer (:mod:`gessl.trainer`), the evaluation
(:mod:`gessl.eval`), the fair test and the floors (:mod:`theory`) all call it.
"""

from gessl.adapt.batching import BATCHINGS, per_task, summed_grad
from gessl.adapt.evaluate import adapt_tasks
from gessl.adapt.linear import FactoredPlan, NotFactorableError, linear_weights, views_batchable
from gessl.adapt.objective import Adaptation, TaskObjective, ThresholdNet, plain_objective
from gessl.adapt.sgd import Adapter

__all__ = [
    "BATCHINGS",
    "Adaptation",
    "Adapter",
    "FactoredPlan",
    "NotFactorableError",
    "TaskObjective",
    "ThresholdNet",
    "adapt_tasks",
    "linear_weights",
    "per_task",
    "plain_objective",
    "summed_grad",
    "views_batchable",
]
