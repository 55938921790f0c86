"""Parameters and GMACs per 256² image of each network, for every training profile (random weights)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import PROFILES
from trainer.flops import count_macs, count_params
from trainer.model import RSTPM


def profile_cost(name: str, size: int = 256) -> dict[str, tuple[float, float]]:
    cfg = PROFILES[name]
    m = RSTPM(cfg.model, (size, size), pretrained=False).eval()
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        t1, s1, t2, s2 = m.features(x)
    parts = {
        "teacher1": (m.teacher1, (x,)), "student1": (m.student1, (x,)), "teacher2": (m.teacher2, (x,)),
        "student2": (m.student2, (t1[3], *t2)), "discriminator+head": (m.head, (t1[:3], s1, t2, s2)),
    }
    return {k: (count_params(mod) / 1e6, count_macs(mod, *args) / 1e9) for k, (mod, args) in parts.items()}


def main() -> int:
    for name in PROFILES:
        cost = profile_cost(name)
        print(f"\nprofile {name}: {PROFILES[name].model.teacher1} + {PROFILES[name].model.teacher2}")
        print(f"{'network':<20} {'params (M)':>10} {'GMACs':>8}")
        for k, (p, g) in cost.items():
            print(f"{k:<20} {p:>10.2f} {g:>8.3f}")
        print(f"{'total':<20} {sum(p for p, _ in cost.values()):>10.2f} {sum(g for _, g in cost.values()):>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
