"""The archives the LAMMPS tests use: deepmd-kit inputs of examples/models, freshly initialised and
exported at build time by tests/lammps/BUILD.bazel."""
import dataclasses
import os
from typing import Dict

from tests.lammps.harness import Model

# |a - b| <= atol + rtol max|a|, per quantity. Relative: untrained deepmd-kit models' forces range from
# ~1e-4 eV/Å (se_e2_a, DPA1, DPA2: descriptor statistics davg 0, dstd 1) to ~0.3 eV/Å (DPA3).
FP64 = dict(atol=1e-12, rtol=1e-8)
FP32 = dict(atol=0.0, rtol=1e-5)


@dataclasses.dataclass
class TestModel(Model):
    tolerance: Dict[str, float] = dataclasses.field(default_factory=lambda: dict(FP64))


MODELS = {
    "dpa3": TestModel("", "O H"),
    "dpa2": TestModel("", "O H"),
    "hybrid": TestModel("", "O H"),
    "se_e2_a": TestModel("", "O H"),
    "dpa3_spin": TestModel("", "Ni O", spin=True),
    "dpa3_fp32": TestModel("", "O H", tolerance=dict(FP32)),
}


def archive_path(directory: str, name: str) -> str:
    return os.path.join(directory, name + ".pt2")
