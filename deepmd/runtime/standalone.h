// Evaluation without an MD engine: local atoms and a (possibly triclinic, partially periodic) cell in,
// energy, forces on the atoms, virial out. The runtime makes the periodic images, their mapping and
// plan itself, and folds image forces back onto the atoms.
#ifndef DEEPMD_RUNTIME_STANDALONE_H_
#define DEEPMD_RUNTIME_STANDALONE_H_

#include <array>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "deepmd/runtime/deep_pot.h"

namespace deepmd::runtime {

struct PeriodicInput {
  absl::Span<const double> coord;  // [natoms, 3]
  absl::Span<const int> atype;     // [natoms], -1 = ignored
  std::array<double, 9> cell{};    // lattice vectors as rows
  std::array<bool, 3> periodic = {true, true, true};
  absl::Span<const double> spin;    // [natoms, 3], spin models
  absl::Span<const double> fparam;  // [dim_fparam]
  absl::Span<const double> aparam;  // [natoms, dim_aparam]
  bool atomic = false;
};

// output.force / force_mag are [natoms, 3]; atom_energy [natoms]; atom_virial [natoms, 9].
absl::Status EvaluatePeriodic(DeepPot& pot, const PeriodicInput& input, ComputeOutput& output);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_STANDALONE_H_
