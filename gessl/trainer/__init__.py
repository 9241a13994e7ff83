"""GeSSL and plain training of any registered method (reconstruction; see ``config.py``)."""

from gessl.trainer.config import GeSSLConfig
from gessl.trainer.objective import ThresholdNet, build_objective
from gessl.trainer.trainer import NonFiniteLossError, Trainer

__all__ = ["GeSSLConfig", "NonFiniteLossError", "ThresholdNet", "Trainer", "build_objective"]
