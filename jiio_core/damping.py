"""Step sizes ``(α_z, α_μ, α_x)`` of the augmented iteration (eq. 11) and their schedule."""

from __future__ import annotations

import attrs

from jiio_core.validators import int_in, number_in, optional


@attrs.frozen
class Damping:
    """Damping of the augmented fixed point (eq. 11):

    ```
    z⁺ = (1 − α_z) z + α_z f(z, x)
    μ⁺ = (1 − α_μ) μ + α_μ (J_zᵀ μ + ∇_z ℓ)
    x⁺ = Π_C(x − α_x (J_xᵀ μ + ∇_x ℓ))
    ```

    ``x_late`` replaces ``x`` from iteration ``switch_at`` on (the paper lowers α_x late in the
    solve for finer solutions; Appendix C.3 says after 65 iterations, the original code switched
    after ``max(50, 5/8·max_iter)``: see [`paper_code_switch`][jiio_core.damping.Damping.paper_code_switch]).
    """

    z: float = attrs.field(default=0.8, validator=number_in(0.0, 1.0, low_open=True))
    mu: float = attrs.field(default=0.6, validator=number_in(0.0, 1.0, low_open=True))
    x: float = attrs.field(default=0.01, validator=number_in(0.0, low_open=True))
    x_late: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    switch_at: int | None = attrs.field(default=None, validator=optional(int_in(0)))

    def __attrs_post_init__(self) -> None:
        if (self.x_late is None) != (self.switch_at is None):
            raise ValueError(
                "Damping.x_late and Damping.switch_at must be given together, got "
                f"x_late={self.x_late!r}, switch_at={self.switch_at!r}"
            )

    def alpha_x(self, k: int) -> float:
        """``α_x`` used on iteration ``k`` (0-based)."""
        if self.x_late is not None and self.switch_at is not None and k >= self.switch_at:
            return self.x_late
        return self.x

    @staticmethod
    def paper_code_switch(max_iter: int) -> int:
        """Switch iteration used by the original code: ``max(50, ⌊5/8 · max_iter⌋)``."""
        return max(50, (5 * max_iter) // 8)
