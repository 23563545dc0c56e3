// Model deviation: several archives evaluated on the same atoms, and the statistics DP-GEN-style
// active learning reads (deepmd-kit's model_devi output).
#ifndef DEEPMD_RUNTIME_MODEL_DEVIATION_H_
#define DEEPMD_RUNTIME_MODEL_DEVIATION_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "deepmd/runtime/deep_pot.h"

namespace deepmd::runtime {

struct DeviationStats {
  double max_devi_f = 0, min_devi_f = 0, avg_devi_f = 0;  // over atoms of the per-atom force deviation
  double max_devi_v = 0, min_devi_v = 0, avg_devi_v = 0;  // over the 9 virial components, divided by natoms
  double devi_e = 0;                                      // energy deviation divided by natoms
  std::vector<double> atom_devi_f;                        // per atom
};

// Deviation across models: the standard deviation over models (population, 1/K) of each quantity.
// forces[k] holds model k's forces on the same `natoms` atoms ([natoms, 3], ghosts already folded onto
// owners). With relative >= 0, an atom's force deviation is divided by (|mean force| + relative), as
// deepmd-kit's `relative`; likewise the virial with relative_v.
DeviationStats ComputeDeviation(const std::vector<std::vector<double>>& forces,
                                const std::vector<std::array<double, 9>>& virials, const std::vector<double>& energies,
                                int natoms, double relative = -1, double relative_v = -1);

// The pieces of ComputeDeviation, for callers that hold atoms on several ranks (reduce the per-atom
// values across ranks; pass totals of virials and energies and the total number of atoms).
std::vector<double> AtomForceDeviation(const std::vector<std::vector<double>>& forces, int natoms,
                                       double relative = -1);
std::array<double, 9> VirialDeviation(const std::vector<std::array<double, 9>>& virials, int natoms,
                                      double relative_v = -1);
double EnergyDeviation(const std::vector<double>& energies, int natoms);

class ModelDeviation {
 public:
  static absl::StatusOr<std::unique_ptr<ModelDeviation>> Load(const std::vector<std::string>& paths,
                                                              DeepPotOptions options = {});
  // Every model on the same input; the models must agree on type map and spin.
  absl::Status Compute(const ComputeInput& input, std::vector<ComputeOutput>& outputs);
  size_t size() const { return models_.size(); }
  DeepPot& model(size_t k) { return *models_[k]; }
  // The largest cutoff of the models: ghost shells and neighbour lists shared by them must reach it,
  // whichever model comes first.
  double rcut() const;
  void set_skin(double skin);

 private:
  std::vector<std::unique_ptr<DeepPot>> models_;
};

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_MODEL_DEVIATION_H_
