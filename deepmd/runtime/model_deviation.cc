#include "deepmd/runtime/model_deviation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deepmd::runtime {
namespace {

struct Summary {
  double max = 0, min = 0, avg = 0;
};

Summary Summarise(const std::vector<double>& values) {
  Summary s;
  if (values.empty()) return s;
  s.max = *std::max_element(values.begin(), values.end());
  s.min = *std::min_element(values.begin(), values.end());
  for (double v : values) s.avg += v;
  s.avg /= static_cast<double>(values.size());
  return s;
}

}  // namespace

std::vector<double> AtomForceDeviation(const std::vector<std::vector<double>>& forces, int natoms, double relative) {
  const size_t nmodels = forces.size();
  std::vector<double> devi(natoms, 0.0);
  if (nmodels == 0) return devi;
  for (int i = 0; i < natoms; ++i) {
    double mean[3] = {0, 0, 0}, var = 0;
    for (size_t k = 0; k < nmodels; ++k) {
      for (int d = 0; d < 3; ++d) mean[d] += forces[k][3 * i + d] / nmodels;
    }
    for (size_t k = 0; k < nmodels; ++k) {
      for (int d = 0; d < 3; ++d) var += (forces[k][3 * i + d] - mean[d]) * (forces[k][3 * i + d] - mean[d]) / nmodels;
    }
    devi[i] = std::sqrt(var);
    if (relative >= 0) devi[i] /= std::sqrt(mean[0] * mean[0] + mean[1] * mean[1] + mean[2] * mean[2]) + relative;
  }
  return devi;
}

std::array<double, 9> VirialDeviation(const std::vector<std::array<double, 9>>& virials, int natoms,
                                      double relative_v) {
  std::array<double, 9> devi{};
  if (virials.empty()) return devi;
  for (int c = 0; c < 9; ++c) {
    double mean = 0, var = 0;
    for (size_t k = 0; k < virials.size(); ++k) mean += virials[k][c] / virials.size();
    for (size_t k = 0; k < virials.size(); ++k) var += (virials[k][c] - mean) * (virials[k][c] - mean) / virials.size();
    devi[c] = std::sqrt(var);
    if (relative_v >= 0) devi[c] /= std::abs(mean) + relative_v;
    devi[c] /= std::max(natoms, 1);
  }
  return devi;
}

double EnergyDeviation(const std::vector<double>& energies, int natoms) {
  if (energies.empty()) return 0;
  double mean = 0, var = 0;
  for (double e : energies) mean += e / energies.size();
  for (double e : energies) var += (e - mean) * (e - mean) / energies.size();
  return std::sqrt(var) / std::max(natoms, 1);
}

DeviationStats ComputeDeviation(const std::vector<std::vector<double>>& forces,
                                const std::vector<std::array<double, 9>>& virials, const std::vector<double>& energies,
                                int natoms, double relative, double relative_v) {
  DeviationStats stats;
  if (forces.empty()) return stats;
  stats.atom_devi_f = AtomForceDeviation(forces, natoms, relative);
  const Summary f = Summarise(stats.atom_devi_f);
  stats.max_devi_f = f.max, stats.min_devi_f = f.min, stats.avg_devi_f = f.avg;
  const std::array<double, 9> devi_v = VirialDeviation(virials, natoms, relative_v);
  const Summary v = Summarise(std::vector<double>(devi_v.begin(), devi_v.end()));
  stats.max_devi_v = v.max, stats.min_devi_v = v.min, stats.avg_devi_v = v.avg;
  stats.devi_e = EnergyDeviation(energies, natoms);
  return stats;
}

double ModelDeviation::rcut() const {
  double largest = 0;
  for (const auto& model : models_) largest = std::max(largest, model->metadata().rcut);
  return largest;
}

void ModelDeviation::set_skin(double skin) {
  for (auto& model : models_) model->set_skin(skin);
}

absl::StatusOr<std::unique_ptr<ModelDeviation>> ModelDeviation::Load(const std::vector<std::string>& paths,
                                                                     DeepPotOptions options) {
  if (paths.empty()) return absl::InvalidArgumentError("model deviation needs at least one archive");
  auto deviation = std::unique_ptr<ModelDeviation>(new ModelDeviation());
  for (const std::string& path : paths) {
    absl::StatusOr<std::unique_ptr<DeepPot>> pot = DeepPot::Load(path, options);
    if (!pot.ok()) return pot.status();
    const ArchiveMetadata& first = deviation->models_.empty() ? (*pot)->metadata() : deviation->models_[0]->metadata();
    if ((*pot)->metadata().type_map != first.type_map || (*pot)->metadata().is_spin != first.is_spin) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "' has type map [", absl::StrJoin((*pot)->metadata().type_map, " "),
                       "] (spin: ", (*pot)->metadata().is_spin, ") but '", paths[0], "' has [",
                       absl::StrJoin(first.type_map, " "), "] (spin: ", first.is_spin,
                       "): models of a deviation must describe the same elements in the same order; "
                       "use models trained with the same type_map"));
    }
    deviation->models_.push_back(*std::move(pot));
  }
  return deviation;
}

absl::Status ModelDeviation::Compute(const ComputeInput& input, std::vector<ComputeOutput>& outputs) {
  outputs.resize(models_.size());
  for (size_t k = 0; k < models_.size(); ++k) {
    if (absl::Status s = models_[k]->Compute(input, outputs[k]); !s.ok()) {
      absl::Status named(s.code(), absl::StrCat("model ", k, ": ", s.message()));
      // The payloads say how the ranks agreed (and whether they still can): keep them.
      s.ForEachPayload([&](absl::string_view key, const absl::Cord& value) { named.SetPayload(key, value); });
      return named;
    }
  }
  return absl::OkStatus();
}

}  // namespace deepmd::runtime
