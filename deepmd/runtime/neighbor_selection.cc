#include "deepmd/runtime/neighbor_selection.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace deepmd::runtime {
namespace {

// The per-type `sel` of a descriptor that selects per neighbour type, or empty.
std::vector<int64_t> PerTypeSel(const ArchiveMetadata& m) {
  const size_t ntypes = m.type_map.size();
  if (m.sel.size() == ntypes && ntypes > 1) return std::vector<int64_t>(m.sel.begin(), m.sel.end());
  const nlohmann::json config = nlohmann::json::parse(m.model_config_json, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("descriptor")) return {};
  const nlohmann::json& descriptor = config["descriptor"];
  if (!descriptor.is_object() || !descriptor.contains("sel") || !descriptor.contains("type")) return {};
  const nlohmann::json& type = descriptor["type"];
  if (!type.is_string() || (type != "se_e2_a" && type != "se_a")) return {};
  const nlohmann::json& sel = descriptor["sel"];
  if (!sel.is_array() || sel.size() != ntypes) return {};
  std::vector<int64_t> per_type;
  for (const nlohmann::json& s : sel) {
    if (!s.is_number_integer()) return {};
    per_type.push_back(s.get<int64_t>());
  }
  return per_type;
}

}  // namespace

NeighborSelection NeighborSelection::Of(const ArchiveMetadata& m) {
  NeighborSelection selection;
  if (!m.is_spin) selection.per_type_ = PerTypeSel(m);
  selection.total_ = m.nnei;
  return selection;
}

SelOverflow NeighborSelection::Count(const NeighborList& list, absl::Span<const double> coord,
                                     absl::Span<const int64_t> types, double rcut) const {
  SelOverflow overflow;
  const double rc2 = rcut * rcut;
  std::vector<int64_t> counts(std::max<size_t>(per_type_.size(), 1));
  for (size_t i = 0; i + 1 < list.offsets.size(); ++i) {
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t k = list.offsets[i]; k < list.offsets[i + 1]; ++k) {
      const int64_t j = list.neighbors[k];
      double r2 = 0;
      for (int d = 0; d < 3; ++d) r2 += (coord[3 * j + d] - coord[3 * i + d]) * (coord[3 * j + d] - coord[3 * i + d]);
      if (r2 < rc2) ++counts[per_type_.empty() ? 0 : types[j]];
    }
    bool over = false;
    for (size_t t = 0; t < counts.size(); ++t) {
      if (counts[t] > (per_type_.empty() ? total_ : per_type_[t])) {
        over = true;
        overflow.most = std::max(overflow.most, counts[t]);
      }
    }
    overflow.atoms += over;
  }
  return overflow;
}

std::string NeighborSelection::Describe() const {
  if (per_type_.empty()) return absl::StrCat(total_, " neighbours per atom");
  return absl::StrCat("[", absl::StrJoin(per_type_, " "), "] neighbours of each type per atom");
}

}  // namespace deepmd::runtime
