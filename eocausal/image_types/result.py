"""The JSON-ready summary of a fitted image-type model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ImageTypeResult"]


@dataclass
class ImageTypeResult:
    """Summary of a fitted :class:`ImageTypeModel` (JSON-ready through :meth:`to_dict`).

    Attributes
    ----------
    n_types : int
    input_kind : {"chips", "embeddings"}
    type_effects : list of dict
        One entry per type, ordered by effect (type 0 = lowest): ``type``,
        ``mean`` and ``sd`` of the variational posterior of τ_k (outcome units)
        and ``share``, the mean assignment probability over the training units.
    ate : float
        Implied average effect, the (weighted) mean over units of Σ_k p_ik m_k.
    difference_in_means : float
        The prior centre of every τ_k.
    noise_sd : float
        Fitted σ of the Gaussian likelihood (outcome units).
    final_loss : float
        Negative ELBO per unit in the last epoch (standardised outcome).
    n_units : int
    params : dict
        The model's parameters (``get_params()``), non-scalar values as strings.
    """

    n_types: int
    input_kind: str
    type_effects: list[dict[str, float]]
    ate: float
    difference_in_means: float
    noise_sd: float
    final_loss: float
    n_units: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (floats, ints, strings, lists, dicts)."""
        return {
            "n_types": int(self.n_types),
            "input_kind": self.input_kind,
            "type_effects": [
                {k: (int(v) if k == "type" else float(v)) for k, v in row.items()}
                for row in self.type_effects
            ],
            "ate": float(self.ate),
            "difference_in_means": float(self.difference_in_means),
            "noise_sd": float(self.noise_sd),
            "final_loss": float(self.final_loss),
            "n_units": int(self.n_units),
            "params": dict(self.params),
        }
