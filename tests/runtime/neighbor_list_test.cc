// The runtime's cell-list neighbour list against brute force, and its memory bounded by the number of
// atoms (not the volume of their bounding box).
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "deepmd/runtime/neighbor_list.h"
#include "gtest/gtest.h"

namespace {

using deepmd::runtime::BuildNeighborList;
using deepmd::runtime::NeighborList;

std::set<int64_t> Row(const NeighborList& list, int64_t i) {
  return std::set<int64_t>(list.neighbors.begin() + list.offsets[i], list.neighbors.begin() + list.offsets[i + 1]);
}

std::set<int64_t> BruteForce(const std::vector<double>& c, int64_t i, double cutoff) {
  std::set<int64_t> out;
  for (int64_t j = 0; j < static_cast<int64_t>(c.size() / 3); ++j) {
    double r2 = 0;
    for (int d = 0; d < 3; ++d) r2 += (c[3 * j + d] - c[3 * i + d]) * (c[3 * j + d] - c[3 * i + d]);
    if (j != i && r2 < cutoff * cutoff) out.insert(j);
  }
  return out;
}

long PeakRssKb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

TEST(NeighborList, EqualsBruteForce) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 17.0);
  std::vector<double> coord(3 * 400);
  for (double& x : coord) x = u(rng);
  NeighborList list;
  BuildNeighborList(coord, 250, 4.5, list);
  ASSERT_EQ(list.offsets.size(), 251u);
  for (int64_t i = 0; i < 250; ++i) EXPECT_EQ(Row(list, i), BruteForce(coord, i, 4.5)) << "atom " << i;
}

TEST(NeighborList, FarAtomCostsNoGrid) {
  // 64 atoms in a 10 Å box and one 3,000 Å away on every axis: a dense grid of 6 Å cells over the
  // bounding box would hold 1.25e8 cells (about 2 GB of counters).
  std::vector<double> coord;
  for (int i = 0; i < 64; ++i) {
    coord.insert(coord.end(), {2.5 * (i % 4), 2.5 * ((i / 4) % 4), 2.5 * (i / 16)});
  }
  coord.insert(coord.end(), {3000.0, 3000.0, 3000.0});
  const long before = PeakRssKb();
  NeighborList list;
  BuildNeighborList(coord, 65, 6.0, list);
  EXPECT_LT(PeakRssKb() - before, 64 * 1024) << "peak memory grew by more than 64 MB";
  for (int64_t i = 0; i < 65; ++i) EXPECT_EQ(Row(list, i), BruteForce(coord, i, 6.0)) << "atom " << i;
  EXPECT_TRUE(Row(list, 64).empty());
}

TEST(NeighborList, AbsurdlyFarAtom) {
  std::vector<double> coord = {0, 0, 0, 1, 0, 0, 1e15, -1e15, 1e15};
  NeighborList list;
  BuildNeighborList(coord, 3, 6.0, list);
  EXPECT_EQ(Row(list, 0), std::set<int64_t>({1}));
  EXPECT_TRUE(Row(list, 2).empty());
}

}  // namespace
