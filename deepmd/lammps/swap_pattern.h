// SwapPattern: LAMMPS's ghost communication pattern (its "swaps"), learnt through the public Pair
// comm hooks, turned into a deepmd/ops exchange plan. LAMMPS-free, so it is unit-tested on its own.
//
// One discovery per neighbour-list rebuild, two passes:
//   forward  (comm->forward_comm_pair): swap k's pack gives its send list; every packed row carries the
//            sender's rank, so the unpack gives the receive count, first ghost row and the sender;
//   reverse  (comm->reverse_comm_pair, swaps in reverse order): ghost holders pack their rank, so each
//            sender learns where its swap k went.
// A swap that moves no atoms has no peer on either side; both sides leave the message out but keep
// the (empty) stage, so stage k means swap k on every rank.
#ifndef DEEPMD_LAMMPS_SWAP_PATTERN_H_
#define DEEPMD_LAMMPS_SWAP_PATTERN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace deepmd::lammps {

class SwapPattern {
 public:
  // Forward pass; call for every swap, in order.
  void BeginForward();
  void PackForward(int n, const int* send_rows, int rank, double* buf);
  void UnpackForward(int n, int first_row, const double* buf);
  // Reverse pass (swaps come in reverse order).
  void BeginReverse();
  void PackReverse(int n, int rank, double* buf);
  void UnpackReverse(int n, const double* buf);

  int num_swaps() const { return num_swaps_; }

  // The plan of this rank's `nlocal + nghost` rows (validated). `communicator` is an MPI_Fint.
  absl::StatusOr<std::vector<int32_t>> BuildPlan(int32_t communicator, int rank, int size, int nlocal,
                                                 int nghost) const;

 private:
  struct Swap {
    std::vector<int32_t> send_rows;
    int send_peer = -1;
    int recv_count = 0, recv_first = 0, recv_peer = -1;
  };
  Swap& swap(int k);
  std::vector<Swap> swaps_;  // reused across rebuilds
  int num_swaps_ = 0;
  int reverse_next_ = 0;  // the swap the next reverse call belongs to
};

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_SWAP_PATTERN_H_
