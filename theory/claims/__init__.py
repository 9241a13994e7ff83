"""The claims registry. Importing this package registers every built-in claim.

>>> from theory.claims import all_claims, get_claim
>>> result = get_claim("collapse_values").check(budget="tiny", seed=0)
>>> result.verdict
'holds'
"""

from theory.claims import (  # noqa: F401  (importing registers the claims)
    accuracy,
    collapse,
    contrastive,
    dynamics,
    families,
    generalization,
    gessl_claims,
    gessl_generalization,
    identifiability,
    mi_bounds,
    multiview,
    noncontrastive,
    reconstruction,
    spectral,
    spectral_embedding,
)
from theory.claims.base import (
    BUDGETS,
    KINDS,
    N_SE,
    REPRODUCTION_VERDICTS,
    THEOREM_KINDS,
    VERDICTS,
    Alternative,
    Claim,
    ClaimResult,
    Series,
)
from theory.claims.registry import all_claims, claim, get_claim, register, unregister

__all__ = [
    "BUDGETS",
    "KINDS",
    "N_SE",
    "REPRODUCTION_VERDICTS",
    "THEOREM_KINDS",
    "VERDICTS",
    "Alternative",
    "Claim",
    "ClaimResult",
    "Series",
    "all_claims",
    "claim",
    "get_claim",
    "register",
    "unregister",
]
