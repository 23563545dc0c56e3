#include "deepmd/runtime/standalone.h"

#include "absl/strings/str_cat.h"
#include "deepmd/runtime/periodic_images.h"

namespace deepmd::runtime {

absl::Status EvaluatePeriodic(DeepPot& pot, const PeriodicInput& in, ComputeOutput& out) {
  const int64_t natoms = static_cast<int64_t>(in.atype.size());
  if (static_cast<int64_t>(in.coord.size()) != 3 * natoms) {
    return absl::InvalidArgumentError(absl::StrCat("coord has ", in.coord.size(), " values for ", natoms, " atoms"));
  }
  if (!in.spin.empty() && static_cast<int64_t>(in.spin.size()) != 3 * natoms) {
    return absl::InvalidArgumentError(absl::StrCat("spin has ", in.spin.size(), " values for ", natoms, " atoms"));
  }
  const double margin =
      pot.metadata().is_spin && !in.spin.empty() ? VirtualAtomMargin(pot.metadata(), in.atype, in.spin) : 0.0;
  absl::StatusOr<PeriodicImages> images =
      MakePeriodicImages(in.coord, in.cell, in.periodic, pot.metadata().rcut + margin);
  if (!images.ok()) return images.status();
  const int64_t nall = static_cast<int64_t>(images->owner.size());
  std::vector<int> atype(nall);
  std::vector<double> spin;
  for (int64_t r = 0; r < nall; ++r) {
    atype[r] = in.atype[images->owner[r]];
    for (int d = 0; d < 3 && !in.spin.empty(); ++d) spin.push_back(in.spin[3 * images->owner[r] + d]);
  }
  ComputeInput step;
  step.coord = images->coord;
  step.atype = atype;
  step.nlocal = static_cast<int>(natoms);
  step.plan = images->plan;
  step.spin = spin;
  step.fparam = in.fparam;
  step.aparam = in.aparam;
  step.atomic = in.atomic;
  step.ago = 0;
  step.ids = images->owner;  // errors name an image by its atom's index in the input
  ComputeOutput extended;
  if (absl::Status s = pot.Compute(step, extended); !s.ok()) return s;
  // Fold every image's share onto its atom.
  auto fold = [&](const std::vector<double>& from, int width, std::vector<double>& to) {
    to.assign(width * natoms, 0.0);
    for (int64_t r = 0; r < nall; ++r) {
      for (int k = 0; k < width; ++k) to[width * images->owner[r] + k] += from[width * r + k];
    }
  };
  out.energy = extended.energy;
  out.virial = extended.virial;
  fold(extended.force, 3, out.force);
  if (!extended.force_mag.empty()) fold(extended.force_mag, 3, out.force_mag);
  if (in.atomic) {
    out.atom_energy = extended.atom_energy;
    fold(extended.atom_virial, 9, out.atom_virial);
  }
  return absl::OkStatus();
}

}  // namespace deepmd::runtime
