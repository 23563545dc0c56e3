#include "deepmd/runtime/periodic_images.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "deepmd/ops/plan.h"

namespace deepmd::runtime {

absl::StatusOr<PeriodicImages> MakePeriodicImages(absl::Span<const double> coord, const std::array<double, 3>& box,
                                                  const std::array<bool, 3>& periodic, double cutoff) {
  if (coord.size() % 3 != 0) return absl::InvalidArgumentError("coordinates must be [natoms, 3]");
  if (!(cutoff > 0)) return absl::InvalidArgumentError(absl::StrCat("cutoff ", cutoff, " must be positive"));
  for (int d = 0; d < 3; ++d) {
    if (periodic[d] && !(box[d] > 0)) {
      return absl::InvalidArgumentError(absl::StrCat("periodic box length ", box[d], " must be positive"));
    }
  }
  PeriodicImages out;
  out.nloc = static_cast<int64_t>(coord.size() / 3);
  out.coord.assign(coord.begin(), coord.end());
  for (int64_t i = 0; i < out.nloc; ++i) {
    out.owner.push_back(i);
    for (int d = 0; d < 3; ++d) {
      double& x = out.coord[3 * i + d];
      if (!std::isfinite(x)) return absl::InvalidArgumentError(absl::StrCat("atom ", i, " has a non-finite coordinate"));
      if (periodic[d]) x -= std::floor(x / box[d]) * box[d];
      if (periodic[d] && x >= box[d]) x = 0;  // rounding
    }
  }
  struct Stage {
    std::vector<int32_t> rows;
    int32_t first;
  };
  std::vector<Stage> stages;
  for (int d = 0; d < 3; ++d) {
    if (!periodic[d]) continue;
    const int64_t dim_start = static_cast<int64_t>(out.owner.size());
    std::array<std::pair<int64_t, int64_t>, 2> previous{};
    const int hops = static_cast<int>(std::ceil(cutoff / box[d]));
    for (int hop = 1; hop <= hops; ++hop) {
      for (int side = 0; side < 2; ++side) {  // 0: images shifted up (from rows near the lower face)
        const auto [from, to] = hop == 1 ? std::make_pair(int64_t{0}, dim_start) : previous[side];
        Stage stage{{}, static_cast<int32_t>(out.owner.size())};
        for (int64_t r = from; r < to; ++r) {
          const double x = out.coord[3 * r + d];
          if (side == 0 ? x < cutoff : x >= box[d] - cutoff) stage.rows.push_back(static_cast<int32_t>(r));
        }
        for (int32_t r : stage.rows) {
          for (int k = 0; k < 3; ++k) out.coord.push_back(out.coord[3 * r + k]);
          out.coord[out.coord.size() - 3 + d] += side == 0 ? box[d] : -box[d];
          out.owner.push_back(out.owner[r]);
        }
        previous[side] = {stage.first, static_cast<int64_t>(out.owner.size())};
        stages.push_back(std::move(stage));
      }
    }
  }
  const int64_t nall = static_cast<int64_t>(out.owner.size());
  ops::PlanBuilder builder(ops::kNoCommunicator, 0, 1, static_cast<int32_t>(out.nloc),
                           static_cast<int32_t>(nall - out.nloc));
  for (const Stage& s : stages) {
    builder.BeginStage().Send(0, s.rows).Receive(0, static_cast<int32_t>(s.rows.size()), s.first);
  }
  absl::StatusOr<std::vector<int32_t>> plan = builder.Build();
  if (!plan.ok()) return plan.status();
  out.plan = *std::move(plan);
  return out;
}

}  // namespace deepmd::runtime
