#include "deepmd/runtime/deep_spin.h"

#include "absl/strings/str_cat.h"

namespace deepmd::runtime {

absl::StatusOr<std::unique_ptr<DeepSpin>> DeepSpin::Load(const std::string& path, DeepPotOptions options) {
  absl::StatusOr<std::unique_ptr<DeepPot>> pot = DeepPot::Load(path, options);
  if (!pot.ok()) return pot.status();
  if (!(*pot)->metadata().is_spin) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not a spin model (metadata is_spin = false): load it with DeepPot"));
  }
  return std::unique_ptr<DeepSpin>(new DeepSpin(*std::move(pot)));
}

absl::Status DeepSpin::Compute(const ComputeInput& input, ComputeOutput& output) {
  if (input.spin.size() != input.coord.size()) {
    return absl::InvalidArgumentError(absl::StrCat("DeepSpin needs a spin vector per atom: ", input.spin.size(),
                                                   " spin values for ", input.coord.size() / 3, " atoms"));
  }
  return pot_->Compute(input, output);
}

}  // namespace deepmd::runtime
