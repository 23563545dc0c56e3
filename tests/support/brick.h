// Test support: a periodic orthorhombic box split over a processor grid, and each rank's ghosts made
// the way LAMMPS's CommBrick::borders() makes them (dimension by dimension, one stage per direction
// and hop, ghosts received in one hop forwarded in the next when the cutoff exceeds a subdomain).
// Row metadata travels with plain MPI, independent of the code under test. Used as the oracle's side
// of the multi-rank tests.
#ifndef DEEPMD_TESTS_SUPPORT_BRICK_H_
#define DEEPMD_TESTS_SUPPORT_BRICK_H_

#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace deepmd::testing {

using Vec3 = std::array<double, 3>;

struct Decomposition {
  std::array<int, 3> grid, me;
  int rank = 0, size = 1;
  Vec3 box, lo, hi;
  int Neighbor(int dim, int dir) const;
};

// Reads "px,py,pz"; aborts the job with a message when the grid does not match the communicator.
Decomposition Decompose(const std::string& grid, const Vec3& box, MPI_Comm comm);

// One rank's rows (owned atoms first, then ghosts in fill order) and the stages that fill the ghosts.
struct Ghosts {
  struct Row {
    int id;    // global atom id
    Vec3 pos;  // position of this image
  };
  struct Stage {
    int dest, src;
    std::vector<int32_t> send;
    int recv_count, first_row;
  };
  std::vector<Row> rows;
  int nlocal = 0;
  std::vector<Stage> stages;
  int multi_hop_rows = 0;  // rows sent in a second or later hop of a dimension
};

// Collective. `atoms` is the same global list on every rank (positions inside the box).
Ghosts MakeGhosts(const Decomposition& dd, const std::vector<Vec3>& atoms, double cutoff, MPI_Comm comm);

// The rank's exchange plan for those ghosts (aborts the job if the builder refuses it).
std::vector<int32_t> PlanFor(const Decomposition& dd, const Ghosts& g, MPI_Comm comm);

}  // namespace deepmd::testing

#endif  // DEEPMD_TESTS_SUPPORT_BRICK_H_
