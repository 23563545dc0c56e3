// Multi-rank test of the ghost-exchange ops (run under mpirun by tests/ops/BUILD.bazel).
//
// The test decomposes a random periodic set of atoms over a processor grid and makes each rank's ghosts
// itself, the way LAMMPS's CommBrick::borders() does: dimension by dimension, one stage per direction
// and hop, forwarding ghosts received in the previous hop when the cutoff exceeds a subdomain (multi-hop).
// Row metadata (global atom id, image position) travels with plain MPI here, independent of the code
// under test. Checks: every ghost row equals its owner's row (found by global id); the reverse
// exchange equals a gathered serial computation; the adjoint identity holds across ranks; bad plans
// fail before communicating; a count mismatch between peers is reported.
#include <mpi.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "deepmd/ops/exchange.h"
#include "deepmd/ops/ops.h"
#include "deepmd/ops/plan.h"
#include "deepmd/ops/shared_memory.h"
#include "tests/support/brick.h"

ABSL_FLAG(std::string, grid, "1,1,1", "processor grid px,py,pz (product = number of ranks)");
ABSL_FLAG(int, atoms, 160, "number of atoms");
ABSL_FLAG(int, seed, 2024, "random seed (same on every rank)");
ABSL_FLAG(bool, shared_memory, true,
          "let ranks of this host write rows into each other's memory (false: DEEPMD_EXCHANGE_SHARED_MEMORY=0, "
          "every row through MPI)");

namespace {

using deepmd::testing::Decomposition;
using deepmd::testing::Ghosts;
using deepmd::testing::MakeGhosts;
using deepmd::testing::PlanFor;
using deepmd::testing::Vec3;
const Vec3 kBox = {9.0, 8.0, 7.0};

double Feature(int id, int k) { return std::sin(0.37 * id + 1.3 * k) + 0.01 * id; }
double Cotangent(int id, int rank, int row, int k) { return std::cos(0.11 * id + 0.7 * rank + 0.013 * row + k); }

struct Tally {
  int passed = 0, failed = 0;
  void Check(bool ok, const std::string& what, int rank) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::fprintf(stderr, "rank %d FAILED: %s\n", rank, what.c_str());
    }
  }
};

void CheckExchanges(const Decomposition& dd, const Ghosts& g, const std::vector<int32_t>& words, at::ScalarType dtype,
                    const std::string& name, MPI_Comm comm, Tally& tally) {
  constexpr int kWidth = 5;
  const int nrows = static_cast<int>(g.rows.size());
  const auto options = at::TensorOptions().dtype(dtype);
  const at::Tensor plan = deepmd::ops::PlanTensor(words);
  const double tol = dtype == at::kDouble ? 1e-12 : 2e-5;

  // Forward: ghost inputs are NaN, so a ghost row left unfilled cannot pass.
  at::Tensor x = at::full({nrows, kWidth}, NAN, at::TensorOptions().dtype(at::kDouble));
  for (int r = 0; r < g.nlocal; ++r) {
    for (int k = 0; k < kWidth; ++k) x[r][k] = Feature(g.rows[r].id, k);
  }
  x = x.to(dtype);
  const at::Tensor out = deepmd::ops::ExchangeGhosts(plan, x).to(at::kDouble);
  bool forward_ok = out.size(0) == nrows;
  for (int r = 0; r < nrows && forward_ok; ++r) {
    for (int k = 0; k < kWidth; ++k) {
      const double expected = static_cast<double>(at::scalar_tensor(Feature(g.rows[r].id, k), options).item<double>());
      forward_ok = forward_ok && out[r][k].item<double>() == expected;
    }
  }
  tally.Check(forward_ok, name + ": every ghost row equals its owner's row", dd.rank);

  // Reverse: each owner row must receive the sum of the cotangents of all its images, on every rank.
  at::Tensor y = at::empty({nrows, kWidth}, at::TensorOptions().dtype(at::kDouble));
  std::vector<double> mine;  // id, then kWidth values, per row
  for (int r = 0; r < nrows; ++r) {
    mine.push_back(g.rows[r].id);
    for (int k = 0; k < kWidth; ++k) {
      y[r][k] = Cotangent(g.rows[r].id, dd.rank, r, k);
      mine.push_back(y[r][k].item<double>());
    }
  }
  const at::Tensor reverse = deepmd::ops::ExchangeGhostsReverse(plan, y.to(dtype)).to(at::kDouble);
  int count = static_cast<int>(mine.size());
  std::vector<int> counts(dd.size), displs(dd.size);
  MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, comm);
  for (int i = 1; i < dd.size; ++i) displs[i] = displs[i - 1] + counts[i - 1];
  std::vector<double> all(displs.back() + counts.back());
  MPI_Allgatherv(mine.data(), count, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, comm);
  std::map<int, std::array<double, kWidth>> serial;  // the gathered serial computation
  for (size_t i = 0; i < all.size(); i += kWidth + 1) {
    auto& sum = serial[static_cast<int>(all[i])];
    for (int k = 0; k < kWidth; ++k) sum[k] += all[i + 1 + k];
  }
  bool reverse_ok = true;
  for (int r = 0; r < nrows; ++r) {
    for (int k = 0; k < kWidth; ++k) {
      const double got = reverse[r][k].item<double>();
      const double expected = r < g.nlocal ? serial[g.rows[r].id][k] : 0.0;
      reverse_ok = reverse_ok && std::abs(got - expected) <= tol * (1 + std::abs(expected));
    }
  }
  tally.Check(reverse_ok, name + ": reverse exchange equals the gathered serial sums; ghost rows zero", dd.rank);

  // Adjoint identity over all ranks: <E x, y> == <x, E^T y> (x's ghost rows now finite).
  const at::Tensor xf = x.nan_to_num(0.0).to(at::kDouble);
  double local[2] = {(out * y).sum().item<double>(), (xf * reverse).sum().item<double>()}, global[2];
  MPI_Allreduce(local, global, 2, MPI_DOUBLE, MPI_SUM, comm);
  tally.Check(std::abs(global[0] - global[1]) <= tol * (1 + std::abs(global[0])),
              absl::StrCat(name, ": adjoint identity ", global[0], " vs ", global[1]), dd.rank);

  // Autograd through the op under MPI: d/dx of sum(w * E x) is E^T w.
  at::Tensor xg = x.nan_to_num(0.0).detach().requires_grad_(true);
  const at::Tensor w = y.to(dtype);
  (deepmd::ops::ExchangeGhosts(plan, xg) * w).sum().backward();
  tally.Check(at::allclose(xg.grad().to(at::kDouble), reverse, tol, tol),
              name + ": autograd gradient equals the reverse exchange", dd.rank);
}

void CheckErrors(const Decomposition& dd, const Ghosts& g, MPI_Comm comm, Tally& tally) {
  // A plan that claims another rank fails on every rank before any message is sent.
  const std::vector<int32_t> wrong =
      *deepmd::ops::PlanBuilder(MPI_Comm_c2f(comm), (dd.rank + 1) % dd.size, dd.size, g.nlocal, 0).Build();
  const at::Tensor x = at::zeros({g.nlocal, 2}, at::TensorOptions().dtype(at::kDouble));
  std::string message;
  try {
    deepmd::ops::ExchangeGhosts(deepmd::ops::PlanTensor(wrong), x);
  } catch (const std::exception& e) {
    message = e.what();
  }
  tally.Check(dd.size == 1 || message.find("was built for rank") != std::string::npos,
              "a plan built for another rank is refused: '" + message.substr(0, 200) + "'", dd.rank);

  if (dd.size < 2) return;
  // Rank 1 sends one row fewer than rank 0 expects: rank 0 reports the disagreement.
  deepmd::ops::PlanBuilder builder(MPI_Comm_c2f(comm), dd.rank, dd.size, 2, dd.rank == 0 ? 2 : 0);
  builder.BeginStage();
  if (dd.rank == 0) builder.Receive(1, 2, 2);
  if (dd.rank == 1) builder.Send(0, std::vector<int32_t>{0});
  const at::Tensor y = at::zeros({dd.rank == 0 ? 4 : 2, 3}, at::TensorOptions().dtype(at::kFloat));
  message.clear();
  try {
    deepmd::ops::ExchangeGhosts(deepmd::ops::PlanTensor(*builder.Build()), y);
  } catch (const std::exception& e) {
    message = e.what();
  }
  tally.Check(dd.rank != 0 || message.find("expected 2 rows from rank 1 but received 1") != std::string::npos,
              "a count mismatch between peers is reported: '" + message.substr(0, 200) + "'", dd.rank);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  absl::ParseCommandLine(argc, argv);
  const bool shared_memory = absl::GetFlag(FLAGS_shared_memory);
  if (!shared_memory) setenv("DEEPMD_EXCHANGE_SHARED_MEMORY", "0", 1);  // read at the first exchange
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);  // the ops get a communicator of their own, as in production
  const Decomposition dd = deepmd::testing::Decompose(absl::GetFlag(FLAGS_grid), kBox, comm);

  struct Case {
    const char* name;
    double cutoff, fill_x;  // atoms occupy x in [0, fill_x * box)
    bool expect_multihop;
  };
  const double max_width = std::max({kBox[0] / dd.grid[0], kBox[1] / dd.grid[1], kBox[2] / dd.grid[2]});
  const std::vector<Case> cases = {
      {"dense, cutoff 3.4", 3.4, 1.0, false},
      {"dense, cutoff beyond every subdomain (multi-hop)", max_width * 1.3, 1.0, true},
      {"empty subdomains (atoms in x < 0.25 box)", 3.4, 0.25, false},
      {"atoms in a thin corner, small cutoff (ranks with no atoms at all)", 1.2, 0.08, false},
  };
  Tally tally;
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  for (const Case& c : cases) {
    std::uniform_real_distribution<double> ux(0, kBox[0] * c.fill_x), uy(0, kBox[1]), uz(0, kBox[2]);
    std::vector<Vec3> atoms(absl::GetFlag(FLAGS_atoms));
    for (Vec3& a : atoms) a = {ux(rng), uy(rng), uz(rng)};
    const Ghosts g = MakeGhosts(dd, atoms, c.cutoff, comm);
    int local_stats[3] = {g.nlocal, static_cast<int>(g.rows.size()) - g.nlocal, g.multi_hop_rows};
    int min_stats[3], sum_stats[3];
    MPI_Allreduce(local_stats, min_stats, 3, MPI_INT, MPI_MIN, comm);
    MPI_Allreduce(local_stats, sum_stats, 3, MPI_INT, MPI_SUM, comm);
    if (dd.rank == 0) {
      std::printf("case '%s': %zu stages, min nlocal %d, min nghost %d, total ghosts %d, rows sent in later hops %d\n",
                  c.name, g.stages.size(), min_stats[0], min_stats[1], sum_stats[1], sum_stats[2]);
    }
    tally.Check(sum_stats[0] == static_cast<int>(atoms.size()), std::string(c.name) + ": every atom has one owner",
                dd.rank);
    if (c.expect_multihop) {
      tally.Check(sum_stats[2] > 0, std::string(c.name) + ": ghosts travelled several hops", dd.rank);
    }
    const std::vector<int32_t> words = PlanFor(dd, g, comm);
    for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
      CheckExchanges(dd, g, words, dtype, absl::StrCat(c.name, dtype == at::kDouble ? " [float64]" : " [float32]"),
                     comm, tally);
    }
    if (&c == &cases.front()) CheckErrors(dd, g, comm, tally);
  }

  // The path the rows took between ranks: straight into the peer's memory wherever this host allows it.
  int size = 1;
  MPI_Comm_size(comm, &size);
  const deepmd::ops::ExchangeTotals& sent = deepmd::ops::exchange_totals();
  if (size > 1 && !shared_memory) {
    tally.Check(sent.shared_rows == 0 && sent.mpi_rows > 0, "shared memory off: every row went through MPI", dd.rank);
  } else if (size > 1 && deepmd::ops::SharedMemoryWorks()) {
    tally.Check(sent.shared_rows > 0, "rows were written straight into the peers' shared memory", dd.rank);
  } else if (size > 1) {
    std::printf("rank %d: this host allows no shared memory between processes; only the MPI path was tested\n",
                dd.rank);
  }

  int local[2] = {tally.passed, tally.failed}, total[2];
  MPI_Allreduce(local, total, 2, MPI_INT, MPI_SUM, comm);
  if (dd.rank == 0)
    std::printf("grid %s: %d passed, %d failed\n", absl::GetFlag(FLAGS_grid).c_str(), total[0], total[1]);
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return total[1] == 0 ? 0 : 1;
}
