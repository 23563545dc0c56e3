// SwapPattern: LAMMPS's ghost communication pattern (its "swaps"), learnt through the public Pair
// comm hooks, turned into a deepmd/ops exchange plan. LAMMPS-free, so it is unit-tested on its own.
//
// One discovery per neighbour-list rebuild, in rounds of a forward pass (comm->forward_comm_pair) and
// a reverse pass (comm->reverse_comm_pair). Both comm styles call the hooks in the same shape: per swap,
// the packs of the sends (several with comm_style tiled, one with brick), a self copy (pack, then its
// unpack), then the unpacks of the receives (tiled: in MPI_Waitany order). Every row of a discovery
// message carries {sender's rank, index of the message among the sender's sends, its stage}:
//   forward: a send records its rows; an unpack gives the receive's rows, its sender and which of the
//            sender's messages it is (so arrival order does not matter);
//   reverse: a ghost holder returns {its rank, that index, its stage}, so each sender learns its peer.
// A message's stage must be the same on both sides and respect the data flow. It is derived from the
// order of the calls: a pack after an unpack starts a new swap. Where a swap has no sends or no
// receives on some rank (non-periodic boundaries), that rule alone cannot see every swap boundary, so
// each side raises its stage to the other's and propagates (stages never decrease along the calls or
// along the ghost rows): the caller repeats rounds until no rank changes a stage (periodic boxes and
// brick need one round). Messages without rows are left out of the plan.
#ifndef DEEPMD_LAMMPS_SWAP_PATTERN_H_
#define DEEPMD_LAMMPS_SWAP_PATTERN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace deepmd::lammps {

class SwapPattern {
 public:
  // Doubles per row a discovery pack writes (the pair style's comm_forward / comm_reverse must be >=).
  static constexpr int kWordsPerRow = 3;
  // Rounds before discovery gives up (the stages converge within the number of swaps, 6 in 3D).
  static constexpr int kMaxRounds = 16;

  // A new discovery (at a rebuild): forgets the last pattern.
  void Begin();
  // One round: call for every hook call LAMMPS makes; the packs return the doubles written.
  void BeginForward();
  int PackForward(int n, const int* send_rows, int rank, double* buf);
  void UnpackForward(int n, int first_row, const double* buf);
  void BeginReverse();
  int PackReverse(int n, int first_row, int rank, double* buf);
  void UnpackReverse(int n, const double* buf);
  // Ends the round: whether this rank changed a stage in it (then every rank needs another round).
  bool EndRound();
  // Whether to run another round, given whether any rank changed a stage (the caller agrees on it).
  bool AnotherRound(bool any_rank_changed);

  // This rank's number of stages (largest stage + 1); the plan takes the largest of all ranks'.
  int num_stages() const;

  // The plan of this rank's `nlocal + nghost` rows with `num_stages` stages (validated).
  // `communicator` is an MPI_Fint.
  absl::StatusOr<std::vector<int32_t>> BuildPlan(int32_t communicator, int rank, int size, int nlocal, int nghost,
                                                 int num_stages) const;

 private:
  struct Event {
    bool pack;         // a send (forward pack), else a receive (forward unpack)
    int message = -1;  // index into sends_ or receives_; -1 for a call without rows
    int stage = 0;
  };
  struct Send {
    std::vector<int32_t> rows;
    int event, peer = -1;
  };
  struct Receive {
    int first_row, count, event, peer, sender_message;
  };
  void Fail(absl::Status status);
  bool Raise(int event, int stage);         // stage = max(stage, given); whether it changed
  bool Propagate();                         // along the calls and along the ghost rows; whether anything changed
  int ReceiveAt(int first_row, int count);  // index into receives_, or -1 (and Fail)

  std::vector<Event> events_;      // in the order of the first round's calls
  std::vector<Send> sends_;        // in pack order
  std::vector<Receive> receives_;  // in ghost-row order once the first round ends
  std::vector<int> pack_events_;   // events_ index of each pack call
  int round_ = 0, next_pack_ = 0, stage_ = 0;
  bool last_was_unpack_ = false, changed_ = false;
  absl::Status error_;
};

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_SWAP_PATTERN_H_
