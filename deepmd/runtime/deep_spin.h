// DeepSpin: the entry point for spin models (virtual-atom scheme): spins in, magnetic forces out.
// It is DeepPot with the spin contract checked: the archive must be a spin model and every call must
// carry spins ([nall, 3]); output.force_mag is -dE/dS on every extended atom.
#ifndef DEEPMD_RUNTIME_DEEP_SPIN_H_
#define DEEPMD_RUNTIME_DEEP_SPIN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "deepmd/runtime/deep_pot.h"

namespace deepmd::runtime {

class DeepSpin {
 public:
  static absl::StatusOr<std::unique_ptr<DeepSpin>> Load(const std::string& path, DeepPotOptions options = {});
  const ArchiveMetadata& metadata() const { return pot_->metadata(); }
  absl::Status Compute(const ComputeInput& input, ComputeOutput& output);

 private:
  explicit DeepSpin(std::unique_ptr<DeepPot> pot) : pot_(std::move(pot)) {}
  std::unique_ptr<DeepPot> pot_;
};

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_DEEP_SPIN_H_
