// The ghost exchange itself, on raw row-major buffers: the forward fill of ghost rows and its exact
// transpose. The Torch ops (ops.cc) are thin wrappers; the LAMMPS-free runtime may call these directly.
#ifndef DEEPMD_OPS_EXCHANGE_H_
#define DEEPMD_OPS_EXCHANGE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "deepmd/ops/plan.h"

namespace deepmd::ops {

// out = E in: owned rows are copied, every ghost row is overwritten by its owner's row (multi-hop
// ghosts included), stage by stage. `out` holds plan.nrows() rows of `width` values; only the nlocal
// owned rows of `in` are read (it may hold just those). They must not overlap. Collective: every
// rank of the plan's communicator calls it with its own plan. When `out` was allocated from
// SharedArena (shared_memory.h), peers on this host write their rows straight into it; otherwise
// the rows come through MPI.
template <typename T>
absl::Status ExchangeGhostsForward(const PlanView& plan, const T* in, T* out, int64_t width);

// out = E^T in: every ghost row is sent back along the path it came and ADDED into the row it was
// copied from (stages in reverse order); ghost rows of the result are zero.
template <typename T>
absl::Status ExchangeGhostsReverse(const PlanView& plan, const T* in, T* out, int64_t width);

// Wall time this process spent inside the exchanges (waiting for peers included) since the last
// reset: the benchmarks' step breakdown reads it. Two clock reads per call; not thread-safe.
struct ExchangeTotals {
  double forward_seconds = 0, reverse_seconds = 0;
  int64_t forward_calls = 0, reverse_calls = 0;
  // Rows this process sent to other ranks: written straight into their shared memory, or through MPI.
  int64_t shared_rows = 0, mpi_rows = 0;
};
ExchangeTotals& exchange_totals();

}  // namespace deepmd::ops

#endif  // DEEPMD_OPS_EXCHANGE_H_
