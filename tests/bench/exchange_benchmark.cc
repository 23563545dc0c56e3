// Ghost-exchange throughput between 2 ranks, against a plain MPI_Sendrecv of the same bytes measured in
// the same run. Each rank owns --rows rows of --width features and receives as many ghosts from its
// peer, gathered from scattered rows (as in a real subdomain). Prints a table, and JSON with --json.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "deepmd/ops/exchange.h"
#include "deepmd/ops/ops.h"
#include "deepmd/ops/plan.h"

ABSL_FLAG(int, rows, 10000, "owned rows per rank = ghosts per rank");
ABSL_FLAG(int, width, 128, "features per row");
ABSL_FLAG(int, repeats, 40, "timed repetitions (median reported)");
ABSL_FLAG(std::string, json, "", "also write the results as JSON to this file (rank 0)");

namespace {

template <typename F>
double MedianSeconds(MPI_Comm comm, int repeats, F f) {
  std::vector<double> times;
  f();  // warm up
  for (int i = 0; i < repeats; ++i) {
    MPI_Barrier(comm);
    const double start = MPI_Wtime();
    f();
    double elapsed = MPI_Wtime() - start, slowest;
    MPI_Allreduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
    times.push_back(slowest);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  absl::ParseCommandLine(argc, argv);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "run on exactly 2 ranks\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const int rows = absl::GetFlag(FLAGS_rows), width = absl::GetFlag(FLAGS_width);
  const int repeats = absl::GetFlag(FLAGS_repeats), peer = 1 - rank;

  std::vector<int32_t> send_rows(rows);
  std::iota(send_rows.begin(), send_rows.end(), 0);
  std::shuffle(send_rows.begin(), send_rows.end(), std::mt19937(rank + 1));
  deepmd::ops::PlanBuilder builder(MPI_Comm_c2f(comm), rank, size, rows, rows);
  builder.BeginStage().Send(peer, send_rows).Receive(peer, rows, rows);
  const std::vector<int32_t> words = *builder.Build();
  const deepmd::ops::PlanView plan = *deepmd::ops::PlanView::Parse(words);
  const at::Tensor plan_tensor = deepmd::ops::PlanTensor(words);

  const int64_t n = int64_t{2} * rows * width;
  std::vector<double> in(n, 1.0), out(n), a(int64_t{rows} * width, 2.0), b(int64_t{rows} * width);
  const at::Tensor x = at::rand({2 * rows, width}, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor xf = x.to(at::kFloat);
  const double bytes = double(rows) * width * sizeof(double);

  const double t_mpi = MedianSeconds(comm, repeats, [&] {
    MPI_Sendrecv(a.data(), rows * width, MPI_DOUBLE, peer, 0, b.data(), rows * width, MPI_DOUBLE, peer, 0, comm,
                 MPI_STATUS_IGNORE);
  });
  const double t_fwd = MedianSeconds(comm, repeats, [&] {
    if (!deepmd::ops::ExchangeGhostsForward(plan, in.data(), out.data(), width).ok()) MPI_Abort(comm, 1);
  });
  const double t_rev = MedianSeconds(comm, repeats, [&] {
    if (!deepmd::ops::ExchangeGhostsReverse(plan, in.data(), out.data(), width).ok()) MPI_Abort(comm, 1);
  });
  const double t_op = MedianSeconds(comm, repeats, [&] { deepmd::ops::ExchangeGhosts(plan_tensor, x); });
  const double t_op_rev = MedianSeconds(comm, repeats, [&] { deepmd::ops::ExchangeGhostsReverse(plan_tensor, x); });
  const double t_op32 = MedianSeconds(comm, repeats, [&] { deepmd::ops::ExchangeGhosts(plan_tensor, xf); });

  if (rank == 0) {
    struct Line {
      const char* what;
      double seconds, bytes;
    } lines[] = {
        {"MPI_Sendrecv (baseline)", t_mpi, bytes},
        {"exchange forward (raw buffers)", t_fwd, bytes},
        {"exchange reverse (raw buffers)", t_rev, bytes},
        {"exchange_ghosts op, float64", t_op, bytes},
        {"exchange_ghosts_reverse op, float64", t_op_rev, bytes},
        {"exchange_ghosts op, float32", t_op32, bytes / 2},
    };
    std::printf("2 ranks, %d ghosts x %d features per rank (%.1f MB of float64 each way), median of %d\n\n", rows,
                width, bytes / 1e6, repeats);
    std::printf("| what | time (ms) | effective GB/s | ratio to MPI_Sendrecv |\n|---|---|---|---|\n");
    for (const Line& l : lines) {
      // The ratio compares the bandwidths: 1.0 means as fast as a bare MPI_Sendrecv of the same bytes.
      const double gbps = l.bytes / l.seconds / 1e9;
      std::printf("| %s | %.3f | %.2f | %.2f |\n", l.what, l.seconds * 1e3, gbps, gbps / (bytes / t_mpi / 1e9));
    }
    if (!absl::GetFlag(FLAGS_json).empty()) {
      FILE* f = std::fopen(absl::GetFlag(FLAGS_json).c_str(), "w");
      std::fprintf(f, "{\"rows\": %d, \"width\": %d, \"repeats\": %d, \"results\": [", rows, width, repeats);
      for (size_t i = 0; i < std::size(lines); ++i) {
        std::fprintf(f, "%s{\"what\": \"%s\", \"seconds\": %.6e, \"bytes\": %.0f}", i ? ", " : "", lines[i].what,
                     lines[i].seconds, lines[i].bytes);
      }
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return 0;
}
