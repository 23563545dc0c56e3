// Ghost-exchange throughput between 2 ranks, against a plain MPI_Sendrecv of the same bytes measured in
// the same run. Each rank owns --rows rows of --width features and receives as many ghosts from its
// peer, gathered from scattered rows (as in a real subdomain). When both ranks share a host it also
// measures the floor of any exchange there (see FloorSeconds). Prints a table, and JSON with --json.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
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

// A floor for an exchange of scattered rows between two ranks of one host: only the copies it must
// make, with no packing and no transport. Each rank reads the rows its peer sends straight out of the
// peer's memory (an MPI shared-memory window) into its ghost rows. An out-of-place exchange must also
// copy the owned rows into its result. Both are -1 when the two ranks do not share memory.
struct Floors {
  double in_place = -1, out_of_place = -1;
};

Floors FloorSeconds(MPI_Comm comm, int repeats, int rows, int width, const std::vector<int32_t>& send_rows) {
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int node_size = 0, rank = 0;
  MPI_Comm_size(node, &node_size);
  MPI_Comm_rank(node, &rank);
  Floors floors;
  if (node_size == 2) {
    const int64_t values = int64_t{rows} * width;
    const size_t row_bytes = static_cast<size_t>(width) * sizeof(double);
    double* mine = nullptr;
    MPI_Win window;
    MPI_Win_allocate_shared(2 * values * sizeof(double), sizeof(double), MPI_INFO_NULL, node, &mine, &window);
    std::fill(mine, mine + 2 * values, 1.0);
    MPI_Aint peer_bytes;
    int unit;
    double* peer_rows = nullptr;
    MPI_Win_shared_query(window, 1 - rank, &peer_bytes, &unit, &peer_rows);
    std::vector<int32_t> peer_send_rows(rows);
    MPI_Sendrecv(send_rows.data(), rows, MPI_INT32_T, 1 - rank, 0, peer_send_rows.data(), rows, MPI_INT32_T, 1 - rank,
                 0, node, MPI_STATUS_IGNORE);
    MPI_Barrier(node);  // the peer's rows are written
    std::vector<double> out(2 * values);
    auto read_peer_rows = [&] {
      for (int i = 0; i < rows; ++i) {
        std::memcpy(out.data() + (int64_t{rows} + i) * width, peer_rows + int64_t{peer_send_rows[i]} * width,
                    row_bytes);
      }
    };
    floors.in_place = MedianSeconds(node, repeats, read_peer_rows);
    floors.out_of_place = MedianSeconds(node, repeats, [&] {
      std::memcpy(out.data(), mine, values * sizeof(double));
      read_peer_rows();
    });
    MPI_Win_free(&window);
  }
  MPI_Comm_free(&node);
  return floors;
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
  const at::Tensor owned = x.narrow(0, 0, rows).contiguous();
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
  // What a model's layer does: pad its owned rows, then exchange (before), or hand the op the owned rows.
  const double t_pad_op = MedianSeconds(comm, repeats, [&] {
    deepmd::ops::ExchangeGhosts(plan_tensor, at::constant_pad_nd(owned, {0, 0, 0, rows}));
  });
  const double t_owned_op = MedianSeconds(comm, repeats, [&] { deepmd::ops::ExchangeGhosts(plan_tensor, owned); });
  const double t_owned =
      MedianSeconds(comm, repeats, [&] { std::memcpy(out.data(), in.data(), static_cast<size_t>(bytes)); });
  const Floors floors = FloorSeconds(comm, repeats, rows, width, send_rows);

  if (rank == 0) {
    struct Line {
      const char* what;
      double seconds, bytes;
    };
    std::vector<Line> lines = {
        {"MPI_Sendrecv (baseline)", t_mpi, bytes},
        {"exchange forward (raw buffers)", t_fwd, bytes},
        {"exchange reverse (raw buffers)", t_rev, bytes},
        {"exchange_ghosts op, float64", t_op, bytes},
        {"exchange_ghosts_reverse op, float64", t_op_rev, bytes},
        {"exchange_ghosts op, float32", t_op32, bytes / 2},
        {"pad owned rows + exchange_ghosts op, float64", t_pad_op, bytes},
        {"exchange_ghosts op on the owned rows alone, float64", t_owned_op, bytes},
        {"owned-row copy alone (memcpy)", t_owned, bytes},
    };
    if (floors.in_place > 0) {
      lines.push_back({"floor in place: direct read of the peer's rows", floors.in_place, bytes});
      lines.push_back({"floor out of place: owned-row copy + direct read", floors.out_of_place, bytes});
    }
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
      for (size_t i = 0; i < lines.size(); ++i) {
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
