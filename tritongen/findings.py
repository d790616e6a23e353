"""One lint finding: shared by the graph lint (:mod:`tritongen.lint`) and the Q/DQ placement lint."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    level: str  # "error" (TensorRT will not take it), "warning" (may work, may cost speed or accuracy) or "note"
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}
