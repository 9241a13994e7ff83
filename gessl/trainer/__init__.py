"""GeSSL and plain training of any registered method (reconstruction; see ``config.py``).

One model: :class:`Trainer`; many seeds of one configuration at once: :class:`PopulationTrainer`.
Both take the gradients of an outer step from :class:`gessl.trainer.step.OuterStep`, which runs
GeSSL through the adaptation engine :mod:`gessl.adapt`.
"""

from gessl.adapt import ThresholdNet
from gessl.trainer.config import GeSSLConfig
from gessl.trainer.population import PopulationTrainer
from gessl.trainer.trainer import NonFiniteLossError, Trainer

__all__ = ["GeSSLConfig", "NonFiniteLossError", "PopulationTrainer", "ThresholdNet", "Trainer"]
