// pair_style deepmd/spin: spin models (virtual-atom scheme) in LAMMPS.
//
// Spins come from `atom_style spin` where LAMMPS has the SPIN package (sp: direction and magnitude;
// magnetic forces into fm, converted as deepmd-kit does). Builds without it (Debian's) read them from a
// custom per-atom array, `fix property/atom d2_sp 4 ghost yes` (direction x y z, magnitude in μB), and
// write -dE/dS (eV/μB) into the custom array d2_fm (3 columns, created by the style when missing),
// with ghost atoms' contributions sent home like forces.
#ifndef DEEPMD_LAMMPS_PAIR_DEEPSPIN_H_
#define DEEPMD_LAMMPS_PAIR_DEEPSPIN_H_

#include <vector>

#include "deepmd/lammps/pair_deepmd.h"

namespace LAMMPS_NS {

class PairDeepSpin : public PairDeepMD {
 public:
  explicit PairDeepSpin(LAMMPS* lmp);
  void coeff(int narg, char** arg) override;
  void init_style() override;
  double memory_usage() override;

 protected:
  bool spin_style() const override { return true; }
  void GatherSpins(int nall) override;
  double GhostMargin(const deepmd::runtime::ArchiveMetadata& model) override;
  void ScatterMagneticForces(const deepmd::runtime::ComputeOutput& output) override;
  int SpinPackForward(int n, const int* list, double* buf) override;
  void SpinUnpackForward(int n, int first, const double* buf) override;
  int SpinPackReverse(int n, int first, double* buf) override;
  void SpinUnpackReverse(int n, const int* list, const double* buf) override;

 private:
  void FindCustomArrays();
  double** spin_source() const;  // [nmax][4]: direction, magnitude
  double** magnetic_force() const;

  bool spin_package_ = false;  // atom_style spin (sp, fm) rather than custom arrays
  int sp_index_ = -1, fm_index_ = -1;
  std::vector<double> spin_;  // [nall, 3] spin vectors
};

}  // namespace LAMMPS_NS

#endif  // DEEPMD_LAMMPS_PAIR_DEEPSPIN_H_
