#include "deepmd/lammps/pair_deepspin.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "atom.h"
#include "comm.h"
#include "deepmd/lammps/lammps_compat.h"
#include "error.h"
#include "force.h"

namespace LAMMPS_NS {
namespace {

// deepmd-kit's conversion of -dE/dS (eV/μB) into the SPIN package's fm (rad/ps): times |S| / ħ.
constexpr double kHbarEvPs = 6.5821191e-4;

}  // namespace

PairDeepSpin::PairDeepSpin(LAMMPS* lmp) : PairDeepMD(lmp) {}

void PairDeepSpin::FindCustomArrays() {
  spin_package_ = atom->sp_flag != 0;
  if (spin_package_) return;
  int flag = -1, cols = -1;
  sp_index_ = atom->find_custom("sp", flag, cols);
  if (sp_index_ < 0 || flag != 1 || cols != 4) {
    error->all(FLERR, std::string("pair_style deepmd/spin needs the atoms' spins: use atom_style spin (SPIN package) "
                                  "or define 'fix SPINS all property/atom d2_sp 4 ghost yes' (direction x y z, "
                                  "magnitude in μB) and set it"));
  }
  fm_index_ = atom->find_custom("fm", flag, cols);
  if (fm_index_ < 0) {
    fm_index_ = atom->add_custom("fm", 1, 3);
  } else if (flag != 1 || cols != 3) {
    error->all(FLERR, std::string("pair_style deepmd/spin writes magnetic forces to the custom array d2_fm (3 "
                                  "columns), but a custom per-atom 'fm' of another shape exists"));
  }
}

void PairDeepSpin::coeff(int narg, char** arg) {
  PairDeepMD::coeff(narg, arg);
  Collectively("pair_coeff", [&] { FindCustomArrays(); });  // here, so that dumps after pair_coeff can name d2_fm
}

void PairDeepSpin::init_style() {
  PairDeepMD::init_style();
  Collectively("init", [&] { FindCustomArrays(); });  // indices of custom arrays change when others are deleted
}

double PairDeepSpin::memory_usage() { return PairDeepMD::memory_usage() + spin_.capacity() * sizeof(double); }

double** PairDeepSpin::spin_source() const { return spin_package_ ? atom->sp : atom->darray[sp_index_]; }
double** PairDeepSpin::magnetic_force() const { return spin_package_ ? atom->fm : atom->darray[fm_index_]; }

void PairDeepSpin::GatherSpins(int nall) {
  if (!spin_package_) {
    // Ghost copies of a custom array are refreshed only at rebuilds; spins may change every step.
    comm_mode_ = CommMode::kSpins;
    deepmd::lammps::ForwardComm(comm, this);
    comm_mode_ = CommMode::kNone;
  }
  double** sp = spin_source();
  spin_.resize(3 * static_cast<size_t>(nall));
  for (int i = 0; i < nall; ++i) {
    for (int d = 0; d < 3; ++d) spin_[3 * i + d] = sp[i][d] * sp[i][3];
  }
  input_.spin = spin_;
}

double PairDeepSpin::GhostMargin(const deepmd::runtime::ArchiveMetadata& model) {
  // Virtual atoms sit up to virtual_scale * |S| from their real atoms; the runtime's neighbour lists
  // reach that much further, and the ghost shell must hold those atoms.
  return deepmd::runtime::VirtualAtomMargin(model, atype_, spin_);
}

void PairDeepSpin::ScatterMagneticForces(const deepmd::runtime::ComputeOutput& out) {
  const int nall = atom->nlocal + atom->nghost;
  const double s = output_scale();  // fix adapt's scale, as on the forces
  double** fm = magnetic_force();
  if (spin_package_) {
    double** sp = atom->sp;
    for (int i = 0; i < nall; ++i) {
      for (int d = 0; d < 3; ++d) fm[i][d] += s * out.force_mag[3 * i + d] * sp[i][3] / kHbarEvPs;
    }
    return;  // the SPIN package's reverse communication takes ghosts' fm home
  }
  for (int i = 0; i < nall; ++i) {
    for (int d = 0; d < 3; ++d) fm[i][d] = s * out.force_mag[3 * i + d];
  }
  comm_mode_ = CommMode::kFoldMagneticForces;
  deepmd::lammps::ReverseComm(comm, this);
  comm_mode_ = CommMode::kNone;
}

int PairDeepSpin::SpinPackForward(int n, const int* list, double* buf) {
  double** sp = spin_source();
  int m = 0;
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < 4; ++c) buf[m++] = sp[list[j]][c];
  }
  return m;
}

void PairDeepSpin::SpinUnpackForward(int n, int first, const double* buf) {
  double** sp = spin_source();
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    for (int c = 0; c < 4; ++c) sp[i][c] = buf[m++];
  }
}

int PairDeepSpin::SpinPackReverse(int n, int first, double* buf) {
  double** fm = magnetic_force();
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    for (int d = 0; d < 3; ++d) buf[m++] = fm[i][d];
  }
  return m;
}

void PairDeepSpin::SpinUnpackReverse(int n, const int* list, const double* buf) {
  double** fm = magnetic_force();
  int m = 0;
  for (int j = 0; j < n; ++j) {
    for (int d = 0; d < 3; ++d) fm[list[j]][d] += buf[m++];
  }
}

}  // namespace LAMMPS_NS
