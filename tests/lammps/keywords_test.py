"""deepmd-kit's pair_style keywords and LAMMPS interfaces, through our launcher (README.md's table):

    keywords_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE_DIR WATER_ARCHIVE WATER_DATA

- deepmd-kit's water example input (examples/water/lmp/in.lammps: bare `pair_coeff * * O H`, nvt) runs
  unchanged but for the model file, the data file's name and the run's length;
- fparam_from_compute (a compute's global vector, re-read every step) and fparam_from_fix (a fix's
  vector) == fparam given literally;
  aparam_from_compute (a per-atom compute, different values in two clusters further apart than rcut)
  == aparam given literally, cluster by cluster (per-atom energies and forces); 2 ranks == 1 rank;
- fix adapt's `pair deepmd scale * * v_s` multiplies energy, virial, forces and per-atom energies by
  s on every step, and its reset restores them; `pair_coeff * *` without names == `pair_coeff * * O H`;
  two models with out_freq 0 == the first model, no deviation file; kspace_style pppm alongside
  (extract("cut_coul")) adds exactly its elong; memory_usage() counts the runtime (the archive at least);
- `pair_style deepspin` (deepmd-kit's name) is deepmd/spin, its virtual_len/spin_norm are ignored with a
  warning, and fix adapt's scale multiplies the magnetic forces too;
- refusals: ttm, a missing compute, a partial fix adapt scale (2 ranks, messages naming them).
"""
import os
import sys
import tempfile

import numpy as np

from tests.lammps import harness
from tests.lammps.models import archive_path

RTOL = 1e-10


def thermo_blocks(log_path):
    """Every run's thermo table in log order: a list of {column: values}."""
    blocks, columns = [], None
    with open(log_path) as f:
        for line in f:
            words = line.split()
            if words[:1] == ["Step"]:
                columns, rows = words, []
                blocks.append((columns, rows))
            elif columns and words[:2] == ["Loop", "time"]:
                columns = None
            elif columns and len(words) == len(columns):
                rows.append([float(w) for w in words])
    return [{c: np.array(rows)[:, k] for k, c in enumerate(cols)} for cols, rows in blocks]


def memory_mbytes(output):
    """The 'Per MPI rank memory allocation' figures (max over ranks) of every run, in Mbytes."""
    return [float(line.split("|")[-1].split()[0]) for line in output.splitlines()
            if line.startswith("Per MPI rank memory allocation")]


def close(a, b, what, rtol=RTOL, atol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.allclose(a, b, rtol=rtol, atol=atol), f"{what}: {a!r} != {b!r}"


class Keywords:
    def __init__(self, lmp, run_mpi, archive_dir, water_archive, water_data, work):
        self.lammps = harness.Lammps(lmp, run_mpi, work)
        self.archive_dir, self.water_archive, self.water_data, self.work = archive_dir, water_archive, water_data, work
        self.rng = np.random.default_rng(1414)

    def archive(self, name):
        return archive_path(self.archive_dir, name)

    def run(self, name, nranks, data, script):
        code, output, directory = self.lammps.launch(name, nranks, data, script)
        assert code == 0, f"{name} on {nranks} ranks exited with {code}:\n{output[-4000:]}"
        return thermo_blocks(os.path.join(directory, "log.lammps")), output, directory

    def fails(self, name, nranks, data, script, *expected):
        code, output, _ = self.lammps.launch(name, nranks, data, script, timeout=60)
        assert code != 0, f"{name}: exited 0"
        for text in expected:
            assert text in output, f"{name}: '{text}' not in:\n{output[-3000:]}"
        print(f"{name}: refused with its message")

    def water_example(self):
        """deepmd-kit's examples/water/lmp/in.lammps with our archive of its DFT water and 10 steps."""
        os.makedirs(os.path.join(self.work, "water_example"))
        with open(self.water_data) as src, open(os.path.join(self.work, "water_example", "water.lmp"), "w") as dst:
            dst.write(src.read())
        script = f"""# bulk water

units           metal
boundary        p p p
atom_style      atomic

neighbor        2.0 bin
neigh_modify    every 10 delay 0 check no

read_data	water.lmp
mass 		1 16
mass		2 2

# See https://deepmd.rtfd.io/lammps/ for usage
pair_style	deepmd {self.water_archive}
# If atom names (O H in this example) are not set in the pair_coeff command, the type_map defined by the training parameter will be used by default.
pair_coeff  * *	O H

velocity        all create 330.0 23456789

fix             1 all nvt temp 330.0 330.0 0.5
timestep        0.0005
thermo_style    custom step pe ke etotal temp press vol
thermo          5
dump		1 all custom 5 water.dump id type x y z

run             10
"""
        blocks, _, directory = self.run("water_example", 1, self.water_data, script)
        t = blocks[0]
        assert list(t["Step"]) == [0, 5, 10], t["Step"]
        close(t["Temp"][0], 330.0, "initial temperature", rtol=1e-9)
        assert np.all(np.isfinite(t["PotEng"])) and abs(t["PotEng"][-1] - t["PotEng"][0]) < 1.0, t["PotEng"]
        assert os.path.getsize(os.path.join(directory, "water.dump")) > 0
        print(f"water example: runs unchanged (pe {t['PotEng'][0]:.6f} eV, T 330 K)")

    def parameters(self):
        """fparam_from_compute / aparam_from_compute == the literal values; 2 ranks == 1 rank."""
        lengths = (30.0, 12.0, 12.0)
        a = harness.random_positions(self.rng, np.array([0.5, 0, 0]), np.array([9.5, 12, 12]), 40, 1.7)
        b = harness.random_positions(self.rng, np.array([15.5, 0, 0]), np.array([24.5, 12, 12]), 40, 1.7)
        # rcut 5 Å < the gaps between the clusters (6 Å, periodic image included): they do not interact.
        positions = np.concatenate([a, b])
        system = harness.System(positions, self.rng.integers(1, 3, len(positions)), lengths, 2)
        model = self.archive("dpa3_params")  # 2 frame parameters, 1 atomic parameter
        # fparam on step k: (0.25 + 0.125 k, -0.2), exact in binary; aparam 0.7 in cluster A, 1.3 in B.
        script = f"""units metal
atom_style atomic
boundary p p p
processors * 1 1
read_data data.lmp
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
pair_style deepmd {model} fparam_from_compute FP aparam_from_compute AP
pair_coeff * * O H
variable f1 atom 0.25+0.125*step
variable f2 atom -0.2
compute FP all reduce ave v_f1 v_f2
fix AP all property/atom d_ap
region RA block INF 12 INF INF INF INF
group A region RA
group B subtract all A
set group A d_ap 0.7
set group B d_ap 1.3
compute AP all property/atom d_ap
compute pe all pe/atom
compute EA A reduce sum c_pe
compute EB B reduce sum c_pe
variable fsq atom fx*fx+fy*fy+fz*fz
variable fxy atom fx+2*fy+3*fz
compute FA A reduce sum v_fsq v_fxy
compute FB B reduce sum v_fsq v_fxy
thermo_style custom step pe press c_EA c_EB c_FA[1] c_FA[2] c_FB[1] c_FB[2] c_FP[1] c_FP[2]
thermo_modify format float %.17g norm no
thermo 1
run 3
pair_style deepmd {model} fparam 0.25 -0.2 aparam 0.7
pair_coeff * * O H
run 0
pair_style deepmd {model} fparam 0.625 -0.2 aparam 1.3
pair_coeff * * O H
run 0
variable c1 equal 0.625
variable c2 equal -0.2
fix FV all ave/time 1 1 1 v_c1 v_c2
pair_style deepmd {model} fparam_from_fix FV 1 aparam 1.3
pair_coeff * * O H
run 2
"""
        one, _, _ = self.run("parameters_1", 1, system, script)
        two, _, _ = self.run("parameters_2", 2, system, script)
        for b1, b2 in zip(one, two):
            for column in b1:
                close(b2[column], b1[column], f"2 ranks vs 1: {column}", rtol=1e-8)
        per_step, literal_a, literal_b, from_fix = one
        close(per_step["c_FP[1]"], [0.25, 0.375, 0.5, 0.625], "the compute's fparam[0]")
        assert abs(per_step["PotEng"][3] - per_step["PotEng"][0]) > 1e-6, "fparam was not re-read every step"
        # Cluster A on step 0 saw fparam 0.25 and aparam 0.7; cluster B on step 3 fparam 0.625, aparam 1.3.
        for column in ("c_EA", "c_FA[1]", "c_FA[2]"):
            close(per_step[column][0], literal_a[column][0], f"cluster A {column}")
        for column in ("c_EB", "c_FB[1]", "c_FB[2]"):
            close(per_step[column][3], literal_b[column][0], f"cluster B {column}")
        assert abs(literal_a["c_EB"][0] - per_step["c_EB"][0]) > 1e-6, "aparam does not change cluster B's energy"
        # A fix's values are current after its first end_of_step (the run's setup comes before it).
        for column in (c for c in literal_b if c not in ("Step", "c_FP[1]", "c_FP[2]")):
            close(from_fix[column][-1], literal_b[column][0], f"fparam_from_fix: {column}")
        print("parameters: fparam_from_compute, fparam_from_fix, aparam_from_compute == literal values, "
              "2 ranks == 1 rank")

    def charged_system(self):
        """O and H (charges -0.8, +0.4, neutral) as atom_style charge data."""
        system = harness.dense_system(self.rng, (12.0, 12.0, 12.0), 60, 2)
        system.types = np.array([1] * 20 + [2] * 40)
        path = os.path.join(self.work, "charged.lmp")
        n = len(system.positions)
        lines = ["charged O H (deepmd-gnn tests)", "", f"{n} atoms", "2 atom types", "",
                 "0 12.0 xlo xhi", "0 12.0 ylo yhi", "0 12.0 zlo zhi", "", "Masses", "", "1 16.0", "2 2.0", "",
                 "Atoms # charge", ""]
        lines += [f"{i + 1} {t} {-0.8 if t == 1 else 0.4} {p[0]!r} {p[1]!r} {p[2]!r}"
                  for i, (t, p) in enumerate(zip(system.types, system.positions))]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def interfaces(self):
        """fix adapt's scale, bare pair_coeff, out_freq 0, pppm alongside, memory_usage()."""
        dpa3, second = self.archive("dpa3"), self.archive("dpa3_second")
        script = f"""units metal
atom_style charge
atom_modify map array
boundary p p p
read_data data.lmp
neighbor 1.0 bin
pair_style deepmd {dpa3}
pair_coeff * * O H
compute pe all pe/atom
compute PE all reduce sum c_pe
variable fx1 equal fx[1]
variable fy2 equal fy[2]
thermo_style custom step pe press pxy fnorm v_fx1 v_fy2 c_PE elong
thermo_modify format float %.17g norm no
thermo 1
run 0
variable s equal 1.0-0.125*step
fix A all adapt 1 pair deepmd scale * * v_s reset yes
run 3
unfix A
run 0
pair_coeff * *
run 0
pair_style deepmd {dpa3} {second} out_freq 0
pair_coeff * * O H
run 0
kspace_style pppm 1.0e-5
pair_style deepmd {dpa3}
pair_coeff * * O H
run 0
kspace_style none
pair_style none
run 0
"""
        blocks, output, directory = self.run("interfaces", 1, self.charged_system(), script)
        reference, adapted, reset, bare, no_deviation, pppm, _ = blocks
        scale = 1.0 - 0.125 * np.arange(4)
        for column in ("PotEng", "Press", "Pxy", "Fnorm", "v_fx1", "v_fy2", "c_PE"):
            close(adapted[column], scale * reference[column][0], f"fix adapt scale: {column}")
        for column in (c for c in reference if c != "Step"):  # the later runs start on step 3
            close(reset[column], reference[column], f"after fix adapt's reset: {column}")
            close(bare[column], reference[column], f"pair_coeff * * without names: {column}")
            close(no_deviation[column], reference[column], f"two models, out_freq 0: {column}")
        assert not os.path.exists(os.path.join(directory, "model_devi.out")), "out_freq 0 wrote a deviation file"
        assert abs(pppm["E_long"][0]) > 1e-3, pppm["E_long"]
        close(pppm["PotEng"][0] - pppm["E_long"][0], reference["PotEng"][0], "pppm alongside: pe - elong")
        assert abs(pppm["Fnorm"][0] - reference["Fnorm"][0]) > 1e-6, "pppm does not change the forces"
        memory = memory_mbytes(output)
        assert len(memory) == 7, memory
        held = (memory[0] - memory[-1]) * 1024 * 1024  # what the pair style holds
        assert held >= os.path.getsize(dpa3), (memory, os.path.getsize(dpa3))
        print(f"interfaces: fix adapt scale, bare pair_coeff, out_freq 0, pppm OK; memory_usage holds "
              f"{held / 1024 / 1024:.2f} MB more than pair_style none (archive {os.path.getsize(dpa3) / 1e6:.2f} MB)")

    def refusals(self):
        """Bad keywords and uses stop every rank with a message naming them."""
        system = harness.dense_system(self.rng, (12.0, 12.0, 12.0), 40, 2)
        dpa3 = harness.Model(self.archive("dpa3"), "O H")
        self.fails("ttm", 2, system, harness.lammps_input(
            harness.Model(dpa3.archive, "O H", extra_style_args="ttm TTM"), grid="2 1 1"),
            "'ttm' feeds fix ttm's electron temperatures")
        self.fails("missing_compute", 2, system, harness.lammps_input(
            harness.Model(self.archive("dpa3_params"), "O H", extra_style_args="fparam_from_compute FP aparam 1"),
            grid="2 1 1"), "fparam_from_compute FP: there is no compute with ID 'FP'")
        self.fails("partial_scale", 2, system, harness.lammps_input(
            dpa3, grid="2 1 1", extra="variable s equal 0.5\nfix A all adapt 1 pair deepmd scale 1 1 v_s"),
            "'scale' is 1 for atom types 1 2 but 0.5 for 1 1", "scale * * v_NAME")


    def spin(self):
        """deepmd-kit's name `deepspin` with its older keywords (ignored, with a warning); fix adapt's
        scale also multiplies the magnetic forces."""
        system = harness.dense_system(self.rng, (12.0, 12.0, 12.0), 50, 2)
        directions = self.rng.standard_normal((50, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        system.spins = np.concatenate([directions, self.rng.uniform(0.5, 2.0, (50, 1))], axis=1)
        model = harness.Model(self.archive("dpa3_spin"), "Ni O", spin=True,
                              extra_style_args="virtual_len 0.4 0.4 spin_norm 1.2 1.2")
        columns = "id fx fy fz d2_fm[1] d2_fm[2] d2_fm[3]"
        script = harness.lammps_input(model, comm_cutoff=7.5).replace("pair_style deepmd/spin ", "pair_style deepspin ")
        script += ("undump D\nvariable s equal 0.5\nfix A all adapt 1 pair deepspin scale * * v_s\n"
                   f"dump H all custom 1 half.txt {columns}\ndump_modify H sort id format float %.17g\nrun 0\n")
        blocks, output, directory = self.run("spin", 1, system, script)
        for keyword in ("virtual_len", "spin_norm"):
            assert f"'{keyword}' is ignored" in output, output[-3000:]
        full = harness.read_dump(os.path.join(directory, "dump.txt"))[0]
        half = harness.read_dump(os.path.join(directory, "half.txt"))[0]
        assert np.abs(full["d2_fm[1]"]).max() > 1e-6, "no magnetic forces"
        for column in columns.split()[1:]:
            close(half[column], 0.5 * full[column], f"deepspin, fix adapt scale 0.5: {column}")
        close(blocks[1]["PotEng"], 0.5 * blocks[0]["PotEng"], "deepspin, fix adapt scale 0.5: pe")
        print("spin: pair_style deepspin with virtual_len/spin_norm (ignored, warned); scale 0.5 halves pe, f, fm")


def main(argv):
    lmp, run_mpi, archive_dir, water_archive, water_data = (os.path.abspath(a) for a in argv[2:7])
    with tempfile.TemporaryDirectory() as work:
        k = Keywords(lmp, run_mpi, archive_dir, water_archive, water_data, work)
        for case in sys.argv[7:] or ["water_example", "parameters", "interfaces", "spin", "refusals"]:
            getattr(k, case)()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
