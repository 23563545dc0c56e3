#include "deepmd/runtime/periodic_images.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "deepmd/ops/plan.h"

namespace deepmd::runtime {
namespace {

using Vec = std::array<double, 3>;

// Limits beyond which a cell or a position is a mistake (units, a garbled file), not a system: they
// turn what would be a silent wrap or an allocation of many gigabytes into an error saying so.
// Lattice vectors longer than this (Å) have no physical meaning and overflow their cross products.
constexpr double kMaxLatticeLength = 1e8;
// Thinner than this between opposite faces (Å): a tiny or flat cell. Atoms are then closer to their
// own images than any two atoms may be (0.1 Å, atom_checks.h), and fractions along it are noise.
constexpr double kMinCellWidth = 0.1;
// Atoms farther than this many cell lengths outside a periodic cell: their fractional coordinate keeps
// too few significant digits to be wrapped into the cell meaningfully (and it is a units or cell error).
constexpr double kMaxCellLengthsAway = 1e3;
// Rows (atoms + images) the images may take; the plan's rows are int32 and each costs ~100 bytes here
// and much more in the graph: a thin cell with a long cutoff must be replicated by the caller instead.
constexpr double kMaxRows = 1 << 25;

const char* const kVectorNames[3] = {"a", "b", "c"};

Vec Cross(const Vec& a, const Vec& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
double Dot(const Vec& a, const Vec& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

}  // namespace

absl::StatusOr<PeriodicImages> MakePeriodicImages(absl::Span<const double> coord, const std::array<double, 9>& cell,
                                                  const std::array<bool, 3>& periodic, double cutoff) {
  if (coord.size() % 3 != 0) return absl::InvalidArgumentError("coordinates must be [natoms, 3]");
  if (!(cutoff > 0)) return absl::InvalidArgumentError(absl::StrCat("cutoff ", cutoff, " must be positive"));
  const std::array<Vec, 3> h = {Vec{cell[0], cell[1], cell[2]}, Vec{cell[3], cell[4], cell[5]},
                                Vec{cell[6], cell[7], cell[8]}};
  for (int d = 0; d < 3; ++d) {
    const double length = std::sqrt(Dot(h[d], h[d]));
    if (!std::isfinite(h[d][0]) || !std::isfinite(h[d][1]) || !std::isfinite(h[d][2]) || length > kMaxLatticeLength) {
      return absl::InvalidArgumentError(absl::StrCat("lattice vector ", kVectorNames[d], " (", h[d][0], ", ", h[d][1],
                                                     ", ", h[d][2], ") is non-finite or longer than ",
                                                     kMaxLatticeLength, " A: check the cell"));
    }
  }
  const double volume = Dot(h[0], Cross(h[1], h[2]));
  if (!(std::abs(volume) > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("the cell's lattice vectors are degenerate (volume ", volume,
                                                   "): they must span three dimensions, also along open directions"));
  }
  // Reciprocal vectors: fractional coordinate d of r is Dot(r, g[d]); distance between faces 1/|g[d]|.
  std::array<Vec, 3> g;
  for (int d = 0; d < 3; ++d) {
    const Vec c = Cross(h[(d + 1) % 3], h[(d + 2) % 3]);
    for (int k = 0; k < 3; ++k) g[d][k] = c[k] / volume;
    const double width = 1 / std::sqrt(Dot(g[d], g[d]));  // distance between the faces across d
    if (!(width >= kMinCellWidth)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the cell is ", width, " A thick across lattice vector ", kVectorNames[d], ", thinner than ", kMinCellWidth,
          " A: a tiny or flat cell (lattice vectors a (", absl::StrJoin(h[0], ", "), "), b (",
          absl::StrJoin(h[1], ", "), "), c (", absl::StrJoin(h[2], ", "), ")); check the cell and its units"));
    }
  }
  // Images per atom: about 1 + 2 x (cutoff / width) per periodic direction, images of images included.
  double rows = static_cast<double>(coord.size() / 3);
  for (int d = 0; d < 3; ++d) {
    if (periodic[d]) rows *= 1 + 2 * cutoff * std::sqrt(Dot(g[d], g[d]));
  }
  if (rows > kMaxRows) {
    return absl::InvalidArgumentError(
        absl::StrCat("the cell is too thin for the cutoff ", cutoff, " A: its ", coord.size() / 3,
                     " atoms would need ~", static_cast<int64_t>(std::min(rows, 1e18)), " periodic images (at most ",
                     static_cast<int64_t>(kMaxRows), "); replicate the cell so that it is wider than the cutoff"));
  }
  PeriodicImages out;
  out.nloc = static_cast<int64_t>(coord.size() / 3);
  std::vector<double> frac;  // [nall, 3]
  for (int64_t i = 0; i < out.nloc; ++i) {
    const Vec r = {coord[3 * i], coord[3 * i + 1], coord[3 * i + 2]};
    if (!std::isfinite(r[0]) || !std::isfinite(r[1]) || !std::isfinite(r[2])) {
      return absl::InvalidArgumentError(absl::StrCat("atom ", i, " has a non-finite coordinate"));
    }
    for (int d = 0; d < 3; ++d) {
      double f = Dot(r, g[d]);
      if (periodic[d] && !(std::abs(f - 0.5) <= kMaxCellLengthsAway)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "atom ", i, " at (", r[0], ", ", r[1], ", ", r[2], ") is ", std::abs(f - 0.5),
            " cell lengths from the cell along the periodic lattice vector ", kVectorNames[d], " (more than ",
            kMaxCellLengthsAway,
            "): wrapping it would keep no meaningful digits; check the coordinates, the cell and their units"));
      }
      if (periodic[d]) f -= std::floor(f);
      if (periodic[d] && f >= 1.0) f = 0.0;  // rounding
      frac.push_back(f);
    }
    out.owner.push_back(i);
  }
  struct Stage {
    std::vector<int32_t> rows;
    int32_t first;
  };
  std::vector<Stage> stages;
  for (int d = 0; d < 3; ++d) {
    if (!periodic[d]) continue;
    const double reach = cutoff * std::sqrt(Dot(g[d], g[d]));  // the cutoff in fractional units of d
    const int64_t dim_start = static_cast<int64_t>(out.owner.size());
    std::array<std::pair<int64_t, int64_t>, 2> previous{};
    for (int hop = 1; hop <= static_cast<int>(std::ceil(reach)); ++hop) {
      for (int side = 0; side < 2; ++side) {  // 0: images one period up, from rows near the lower face
        const auto [from, to] = hop == 1 ? std::make_pair(int64_t{0}, dim_start) : previous[side];
        Stage stage{{}, static_cast<int32_t>(out.owner.size())};
        for (int64_t r = from; r < to; ++r) {
          const double f = frac[3 * r + d];
          if (side == 0 ? f < reach : f >= 1.0 - reach) stage.rows.push_back(static_cast<int32_t>(r));
        }
        for (int32_t r : stage.rows) {
          for (int k = 0; k < 3; ++k) frac.push_back(frac[3 * r + k]);
          frac[frac.size() - 3 + d] += side == 0 ? 1.0 : -1.0;
          out.owner.push_back(out.owner[r]);
        }
        previous[side] = {stage.first, static_cast<int64_t>(out.owner.size())};
        stages.push_back(std::move(stage));
      }
    }
  }
  // Cartesian coordinates: r = f . H; local atoms keep their given position along open directions.
  const int64_t nall = static_cast<int64_t>(out.owner.size());
  out.coord.resize(3 * nall);
  for (int64_t r = 0; r < nall; ++r) {
    for (int k = 0; k < 3; ++k) {
      out.coord[3 * r + k] = frac[3 * r] * h[0][k] + frac[3 * r + 1] * h[1][k] + frac[3 * r + 2] * h[2][k];
    }
  }
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

absl::StatusOr<PeriodicImages> MakePeriodicImages(absl::Span<const double> coord, const std::array<double, 3>& box,
                                                  const std::array<bool, 3>& periodic, double cutoff) {
  for (int d = 0; d < 3; ++d) {
    if (!(box[d] > 0)) return absl::InvalidArgumentError(absl::StrCat("box length ", box[d], " must be positive"));
  }
  return MakePeriodicImages(coord, {box[0], 0, 0, 0, box[1], 0, 0, 0, box[2]}, periodic, cutoff);
}

}  // namespace deepmd::runtime
