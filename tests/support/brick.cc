#include "tests/support/brick.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "deepmd/ops/plan.h"

namespace deepmd::testing {

int Decomposition::Neighbor(int dim, int dir) const {
  std::array<int, 3> c = me;
  c[dim] = (c[dim] + dir + grid[dim]) % grid[dim];
  return c[0] + grid[0] * (c[1] + grid[1] * c[2]);
}

Decomposition Decompose(const std::string& grid, const Vec3& box, MPI_Comm comm) {
  Decomposition dd;
  MPI_Comm_rank(comm, &dd.rank);
  MPI_Comm_size(comm, &dd.size);
  std::vector<std::string> parts = absl::StrSplit(grid, ',');
  for (int d = 0; d < 3; ++d) {
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[d], &dd.grid[d]) || dd.grid[d] < 1) {
      if (dd.rank == 0) std::fprintf(stderr, "the grid must be px,py,pz, got '%s'\n", grid.c_str());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  if (dd.grid[0] * dd.grid[1] * dd.grid[2] != dd.size) {
    if (dd.rank == 0) {
      std::fprintf(stderr, "grid %s needs %d ranks, got %d\n", grid.c_str(), dd.grid[0] * dd.grid[1] * dd.grid[2],
                   dd.size);
    }
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  dd.box = box;
  dd.me = {dd.rank % dd.grid[0], (dd.rank / dd.grid[0]) % dd.grid[1], dd.rank / (dd.grid[0] * dd.grid[1])};
  for (int d = 0; d < 3; ++d) {
    dd.lo[d] = box[d] * dd.me[d] / dd.grid[d];
    dd.hi[d] = box[d] * (dd.me[d] + 1) / dd.grid[d];
  }
  return dd;
}

Ghosts MakeGhosts(const Decomposition& dd, const std::vector<Vec3>& atoms, double cutoff, MPI_Comm comm) {
  Ghosts g;
  for (int id = 0; id < static_cast<int>(atoms.size()); ++id) {
    const Vec3& p = atoms[id];
    bool mine = true;
    for (int d = 0; d < 3; ++d) mine = mine && p[d] >= dd.lo[d] && p[d] < dd.hi[d];
    if (mine) g.rows.push_back({id, p});
  }
  g.nlocal = static_cast<int>(g.rows.size());
  for (int d = 0; d < 3; ++d) {
    const double width = dd.box[d] / dd.grid[d];
    const int hops = static_cast<int>(std::ceil(cutoff / width));
    const int dim_start = static_cast<int>(g.rows.size());
    std::array<std::pair<int, int>, 2> previous{};  // rows received in the previous hop, per direction
    for (int hop = 1; hop <= hops; ++hop) {
      for (int dir : {-1, +1}) {
        const int side = dir < 0 ? 0 : 1;
        const auto [from, to] = hop == 1 ? std::make_pair(0, dim_start) : previous[side];
        Ghosts::Stage stage;
        stage.dest = dd.Neighbor(d, dir);
        stage.src = dd.Neighbor(d, -dir);
        std::vector<double> out;  // id, x, y, z per row, as the receiver sees it
        for (int r = from; r < to; ++r) {
          const Vec3& p = g.rows[r].pos;
          if (dir < 0 ? p[d] >= dd.lo[d] + cutoff : p[d] < dd.hi[d] - cutoff) continue;
          stage.send.push_back(r);
          if (hop > 1) ++g.multi_hop_rows;
          Vec3 q = p;
          if (dir < 0 && dd.me[d] == 0) q[d] += dd.box[d];               // crossing the lower boundary
          if (dir > 0 && dd.me[d] == dd.grid[d] - 1) q[d] -= dd.box[d];  // crossing the upper boundary
          out.insert(out.end(), {static_cast<double>(g.rows[r].id), q[0], q[1], q[2]});
        }
        int nsend = static_cast<int>(stage.send.size()), nrecv = 0;
        MPI_Sendrecv(&nsend, 1, MPI_INT, stage.dest, 1, &nrecv, 1, MPI_INT, stage.src, 1, comm, MPI_STATUS_IGNORE);
        std::vector<double> in(4 * static_cast<size_t>(nrecv));
        MPI_Sendrecv(out.data(), 4 * nsend, MPI_DOUBLE, stage.dest, 2, in.data(), 4 * nrecv, MPI_DOUBLE, stage.src, 2,
                     comm, MPI_STATUS_IGNORE);
        stage.recv_count = nrecv;
        stage.first_row = static_cast<int>(g.rows.size());
        for (int i = 0; i < nrecv; ++i) {
          g.rows.push_back({static_cast<int>(in[4 * i]), {in[4 * i + 1], in[4 * i + 2], in[4 * i + 3]}});
        }
        previous[side] = {stage.first_row, stage.first_row + nrecv};
        g.stages.push_back(std::move(stage));
      }
    }
  }
  return g;
}

std::vector<int32_t> PlanFor(const Decomposition& dd, const Ghosts& g, MPI_Comm comm) {
  const int nghost = static_cast<int>(g.rows.size()) - g.nlocal;
  deepmd::ops::PlanBuilder builder(MPI_Comm_c2f(comm), dd.rank, dd.size, g.nlocal, nghost);
  for (const Ghosts::Stage& s : g.stages) {
    builder.BeginStage().Send(s.dest, s.send).Receive(s.src, s.recv_count, s.first_row);
  }
  absl::StatusOr<std::vector<int32_t>> words = builder.Build();
  if (!words.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", dd.rank, std::string(words.status().message()).c_str());
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  return *words;
}

}  // namespace deepmd::testing
