"""GeSSL Lab's method library: SSL losses, the task view of a mini-batch and the σ-measurement.

Reconstruction of *On the Universality of Self-Supervised (Representation) Learning* (Qiang, Wang,
Zheng, Xiong, Hua; arXiv 2405.01053). What is read from the paper and what is reconstructed is
tagged in each module's docstring.
"""

__version__ = "0.1.0"
