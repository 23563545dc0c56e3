"""The one registry of the models every suite runs (Python exactness, C++ runtime, LAMMPS parity, tools).

Adding a model to the suites is one entry here. `source` is a file of @deepmd_kit_fixtures//:models
(deepmd-kit's fixture models; their reference outputs are references/<stem>.json there).
  spin:       a spin_ener model (spin inputs, force_mag)
  precision:  of the model's descriptor; sets the tolerances (float64: 1e-10 absolute, float32: 1e-6 relative)
  lammps:     also run in LAMMPS (1 rank and the parity grids); False only for a stated reason
"""

MODELS = {
    "se_e2_a_small": {"source": "se_e2_a_small.dp", "spin": False, "precision": "float64", "lammps": True},
    "deeppot_sea": {"source": "deeppot_sea.yaml", "spin": False, "precision": "float64", "lammps": True},
    "fparam_aparam": {"source": "fparam_aparam.yaml", "spin": False, "precision": "float64", "lammps": True},
    "fparam_aparam_default": {"source": "fparam_aparam_default.yaml", "spin": False, "precision": "float64", "lammps": True},
    "gen_dpa1_seed1_a0946240": {"source": "gen_dpa1_seed1_a0946240.dp", "spin": False, "precision": "float64", "lammps": True},
    "deeppot_dpa": {"source": "deeppot_dpa.yaml", "spin": False, "precision": "float64", "lammps": True},
    "gen_dpa2_seed1_a0946240": {"source": "gen_dpa2_seed1_a0946240.dp", "spin": False, "precision": "float64", "lammps": True},
    "dpa2_small_medium_options": {"source": "dpa2_small_medium_options.dp", "spin": False, "precision": "float64", "lammps": True},
    "gen_dpa3_seed1_head": {"source": "gen_dpa3_seed1_head.dp", "spin": False, "precision": "float64", "lammps": True},
    "gen_dpa3_seed1_head_noloc": {"source": "gen_dpa3_seed1_head_noloc.dp", "spin": False, "precision": "float64", "lammps": True},
    "gen_dpa3_seed1_a0946240": {"source": "gen_dpa3_seed1_a0946240.dp", "spin": False, "precision": "float64", "lammps": True},
    "dpa3_small_prod_options": {"source": "dpa3_small_prod_options.dp", "spin": False, "precision": "float64", "lammps": True},
    "dpa3_small_dynamic": {"source": "dpa3_small_dynamic.dp", "spin": False, "precision": "float64", "lammps": True},
    "deeppot_dpa_spin": {"source": "deeppot_dpa_spin.yaml", "spin": True, "precision": "float64", "lammps": True},
    "deeppot_dpa3_spin": {"source": "deeppot_dpa3_spin.yaml", "spin": True, "precision": "float64", "lammps": True},
    "deeppot_dpa3_spin_mpi": {"source": "deeppot_dpa3_spin_mpi.yaml", "spin": True, "precision": "float64", "lammps": True},
}

# deepmd-kit training inputs of examples/models, freshly initialised from `seed` (no reference outputs:
# the suites compare them N ranks against 1, C++ against eager Python, forces against finite differences).
# The LAMMPS suites export these (tests/lammps/BUILD.bazel); the runtime and tools suites read every
# input of examples/models. //tests/registry:registry_test fails when an example or a fixture is missing.
EXAMPLES = {
    "dpa3": {"input": "dpa3.json", "seed": 1},
    "dpa2": {"input": "dpa2.json", "seed": 2},
    "hybrid": {"input": "hybrid.json", "seed": 3},
    "se_e2_a": {"input": "se_e2_a.json", "seed": 4},
    "dpa3_spin": {"input": "dpa3_spin.json", "seed": 5},
    "dpa1": {"input": "dpa1.json", "seed": 6},
    "dpa3_fp32": {"input": "dpa3_fp32.json", "seed": 1},  # dpa3's weights, rounded to float32
    "dpa3_second": {"input": "dpa3_second.json", "seed": 2},  # a second model for the deviation tests
    "dpa3_loc_mapping": {"input": "dpa3_loc_mapping.json", "seed": 1},
    "dpa3_params": {"input": "dpa3_params.json", "seed": 1},
    "dpa3_realistic": {"input": "dpa3_realistic.json", "seed": 1},  # benchmarks (tests/bench)
    "dpa3_production": {"input": "dpa3_production.json", "seed": 1},  # benchmarks (tests/bench)
    "dpa2_medium": {"input": "dpa2_medium.json", "seed": 1},  # benchmarks (tests/bench)
}

def model_archives():
    """One genrule per model: archives/<name>.pt2, exported at build time; and registry.json for the
    Python and C++ suites (the same dict, with the archive paths)."""
    for name, entry in MODELS.items():
        native.genrule(
            name = name + "_archive",
            srcs = [
                "@deepmd_kit_fixtures//:models/" + entry["source"],
                "//deepmd/models:sources",
                "//deepmd/tools:export_sources",
            ],
            outs = ["archives/%s.pt2" % name],
            cmd = ("PYTHONPATH=. $(location @debian_python//:python3) -m deepmd.tools.export " +
                   "--ops-library $(location //deepmd/ops:libdeepmd_comm_ops.so) $(location %s) --out $@ " +
                   ">/dev/null") % ("@deepmd_kit_fixtures//:models/" + entry["source"]),
            tools = [
                "//deepmd/ops:libdeepmd_comm_ops.so",
                "@debian_python//:python3",
            ],
        )
    native.filegroup(
        name = "archives",
        srcs = ["archives/%s.pt2" % name for name in MODELS],
    )
    native.genrule(
        name = "registry_json",
        outs = ["registry.json"],
        cmd = "echo '%s' > $@" % json.encode(MODELS),
    )
    native.genrule(
        name = "examples_json",
        outs = ["examples.json"],
        cmd = "echo '%s' > $@" % json.encode(EXAMPLES),
    )
