"""The ``[drift]`` section of the settings (owned by the health package): the drift watch on good-part scores."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DriftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    enabled: bool = True
    # Scores of the last `window` parts judged OK are kept (and the labels of the last `window` parts judged).
    window: int = Field(default=500, ge=10, le=100_000)
    # Fewer OK scores than this: "warming_up", no estimate yet.
    min_samples: int = Field(default=50, ge=10, le=100_000)
    # The estimate is recomputed after this many verdicts (not on every frame).
    check_every: int = Field(default=50, ge=1, le=100_000)
    # Estimated false-reject rate above which the state is "drift" (a fraction, 0.02 = 2 %).
    # None: max(4 × the calibration's target false-reject rate, 0.02).
    alert_frr: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _window_holds_min_samples(self) -> DriftSettings:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed window ({self.window})")
        return self
