// Accuracy of a model on a labelled deepmd-kit data system: what `dp test` reports (energy and energy
// per atom, forces: MAE and RMSE), per frame and over all frames.
#ifndef DEEPMD_TOOLS_ACCURACY_H_
#define DEEPMD_TOOLS_ACCURACY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/tools/npy_system.h"

namespace deepmd::tools {

struct FrameAccuracy {
  std::string set;
  int index = 0;
  double energy = 0, energy_label = 0;   // eV
  double force_mae = 0, force_rmse = 0;  // eV/Å over the frame's 3n components
};

struct Accuracy {
  int natoms = 0;
  std::vector<FrameAccuracy> frames;
  double energy_mae = 0, energy_rmse = 0;                    // eV per frame
  double energy_mae_per_atom = 0, energy_rmse_per_atom = 0;  // eV per atom
  double force_mae = 0, force_rmse = 0;                      // eV/Å over every component
  bool has_energy = false, has_force = false;
};

// Evaluates every frame (types mapped by name through the system's type_map.raw when present).
absl::StatusOr<Accuracy> EvaluateSystem(runtime::DeepPot& pot, const LabelledSystem& system);

}  // namespace deepmd::tools

#endif  // DEEPMD_TOOLS_ACCURACY_H_
