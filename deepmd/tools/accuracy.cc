#include "deepmd/tools/accuracy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "deepmd/runtime/standalone.h"

namespace deepmd::tools {

absl::StatusOr<Accuracy> EvaluateSystem(runtime::DeepPot& pot, const LabelledSystem& system) {
  const auto& model_types = pot.metadata().type_map;
  std::vector<int> atype;
  for (int t : system.type) {
    if (system.type_map.empty()) {
      if (t >= static_cast<int>(model_types.size())) {
        return absl::InvalidArgumentError(absl::StrCat("type.raw has type ", t, "; the model has ", model_types.size(),
                                                       " types (add a type_map.raw to map by name)"));
      }
      atype.push_back(t);
      continue;
    }
    if (t >= static_cast<int>(system.type_map.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("type.raw has type ", t, " but type_map.raw names only ", system.type_map.size()));
    }
    auto it = std::find(model_types.begin(), model_types.end(), system.type_map[t]);
    if (it == model_types.end()) {
      return absl::InvalidArgumentError(absl::StrCat("element '", system.type_map[t], "' of the system is not in the ",
                                                     "model's type map (", absl::StrJoin(model_types, " "), ")"));
    }
    atype.push_back(static_cast<int>(it - model_types.begin()));
  }
  Accuracy acc;
  acc.natoms = static_cast<int>(atype.size());
  double e_abs = 0, e_sq = 0, f_abs = 0, f_sq = 0;
  int64_t f_count = 0;
  for (const LabelledFrame& frame : system.frames) {
    runtime::PeriodicInput in;
    in.coord = frame.coord;
    in.atype = atype;
    if (frame.box.empty()) {
      in.cell = {1, 0, 0, 0, 1, 0, 0, 0, 1};
      in.periodic = {false, false, false};
    } else {
      std::copy(frame.box.begin(), frame.box.end(), in.cell.begin());
    }
    in.fparam = frame.fparam;
    in.aparam = frame.aparam;
    runtime::ComputeOutput out;
    if (absl::Status s = runtime::EvaluatePeriodic(pot, in, out); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(frame.set, " frame ", frame.index, ": ", s.message()));
    }
    FrameAccuracy fa;
    fa.set = frame.set;
    fa.index = frame.index;
    fa.energy = out.energy;
    if (frame.has_energy) {
      acc.has_energy = true;
      fa.energy_label = frame.energy;
      const double d = out.energy - frame.energy;
      e_abs += std::abs(d);
      e_sq += d * d;
    }
    if (frame.has_force) {
      acc.has_force = true;
      double a = 0, q = 0;
      for (size_t k = 0; k < frame.force.size(); ++k) {
        const double d = out.force[k] - frame.force[k];
        a += std::abs(d);
        q += d * d;
      }
      fa.force_mae = a / frame.force.size();
      fa.force_rmse = std::sqrt(q / frame.force.size());
      f_abs += a;
      f_sq += q;
      f_count += static_cast<int64_t>(frame.force.size());
    }
    acc.frames.push_back(fa);
  }
  const double n = static_cast<double>(acc.frames.size());
  if (acc.has_energy && n > 0) {
    acc.energy_mae = e_abs / n;
    acc.energy_rmse = std::sqrt(e_sq / n);
    acc.energy_mae_per_atom = acc.energy_mae / acc.natoms;
    acc.energy_rmse_per_atom = acc.energy_rmse / acc.natoms;
  }
  if (acc.has_force && f_count > 0) {
    acc.force_mae = f_abs / f_count;
    acc.force_rmse = std::sqrt(f_sq / f_count);
  }
  return acc;
}

}  // namespace deepmd::tools
