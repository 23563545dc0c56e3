// The ghost-exchange plan: one versioned int32 array that says, for one rank, how its ghost rows are
// filled from their owners. Format: docs/exchange_plan.md. This header is the only code that knows the
// layout; everything else reads plans through PlanView and writes them through PlanBuilder.
#ifndef DEEPMD_OPS_PLAN_H_
#define DEEPMD_OPS_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deepmd::ops {

inline constexpr int32_t kPlanMagic = 0x444D4350;  // "DMCP"
inline constexpr int32_t kPlanVersion = 1;
// The communicator field of a plan made for a single process without MPI: only self messages.
inline constexpr int32_t kNoCommunicator = -1;

// Word offsets of the header fields.
enum PlanHeader : int32_t {
  kMagic = 0,
  kVersion = 1,
  kLength = 2,
  kCommunicator = 3,
  kRank = 4,
  kSize = 5,
  kNLocal = 6,
  kNGhost = 7,
  kNStages = 8,
  kNMessages = 9,
  kHeaderWords = 10,
};
inline constexpr int32_t kStageWords = 2;    // first message, number of messages
inline constexpr int32_t kMessageWords = 4;  // kind, peer, count, where

enum class MessageKind : int32_t { kSend = 0, kRecv = 1 };

// One message of a stage, as stored. For a send, `indices` are the rows sent, in order; for a receive,
// `first_row` is where the `count` received rows land.
struct Message {
  MessageKind kind;
  int32_t peer;
  int32_t count;
  int32_t first_row;                  // receives only
  absl::Span<const int32_t> indices;  // sends only
};

// A validated, read-only view of a plan's words (which must outlive the view).
class PlanView {
 public:
  // Checks every invariant of docs/exchange_plan.md; the error names the offending field.
  static absl::StatusOr<PlanView> Parse(absl::Span<const int32_t> words);

  int32_t communicator() const { return words_[kCommunicator]; }
  bool uses_mpi() const { return communicator() != kNoCommunicator; }
  int32_t rank() const { return words_[kRank]; }
  int32_t size() const { return words_[kSize]; }
  int32_t nlocal() const { return words_[kNLocal]; }
  int32_t nghost() const { return words_[kNGhost]; }
  int64_t nrows() const { return int64_t{nlocal()} + nghost(); }
  int32_t num_stages() const { return words_[kNStages]; }
  int32_t num_messages() const { return words_[kNMessages]; }
  // Messages [first, first + count) of the message table belong to `stage`.
  int32_t stage_first_message(int32_t stage) const;
  int32_t stage_num_messages(int32_t stage) const;
  Message message(int32_t index) const;
  bool is_self(const Message& m) const { return m.peer == rank(); }
  // Largest number of rows this rank sends to other ranks in one stage (scratch sizing).
  int64_t max_remote_send_rows_per_stage() const;
  int64_t max_remote_send_rows_in_stage(int32_t stage) const;
  // Whether some stage sends ghost rows on (multi-hop or corner ghosts). When not, the reverse
  // exchange never adds into ghost rows and can send them straight from its input.
  bool forwards_ghosts() const { return forwards_ghosts_; }

 private:
  PlanView(absl::Span<const int32_t> words, bool forwards_ghosts) : words_(words), forwards_ghosts_(forwards_ghosts) {}
  absl::Span<const int32_t> words_;
  bool forwards_ghosts_;
};

// Writes plans. Stages are appended in order; within a stage, messages in the order given.
class PlanBuilder {
 public:
  // `communicator` is an MPI_Fint (MPI_Comm_c2f) or kNoCommunicator; `rank`/`size` its rank and size.
  PlanBuilder(int32_t communicator, int32_t rank, int32_t size, int32_t nlocal, int32_t nghost);

  PlanBuilder& BeginStage();
  PlanBuilder& Send(int32_t peer, absl::Span<const int32_t> rows);
  // The rows land at first_row, first_row + 1, ...
  PlanBuilder& Receive(int32_t peer, int32_t count, int32_t first_row);

  // The plan words, validated.
  absl::StatusOr<std::vector<int32_t>> Build() const;

 private:
  struct PendingMessage {
    MessageKind kind;
    int32_t peer;
    int32_t count;
    int32_t first_row;
    std::vector<int32_t> indices;
  };
  int32_t communicator_, rank_, size_, nlocal_, nghost_;
  std::vector<std::vector<PendingMessage>> stages_;
  absl::Status error_;  // first misuse of the builder (Send before BeginStage, ...)
};

// The plan of a compacted row space: `new_row[r]` is the new index of old row r, or -1 when the row is
// dropped (NULL-type atoms). Sends keep the surviving rows in order; each receive keeps the count of
// surviving rows in its old range. Kept rows must stay in order (owned rows first, then ghosts in
// fill order), which holds for any order-preserving compaction. Peers stay consistent when a ghost
// is dropped exactly when its owner is (its type equals its owner's).
absl::StatusOr<std::vector<int32_t>> CompactPlan(const PlanView& plan, absl::Span<const int32_t> new_row);

// For a plan whose messages are all self messages (one rank): the owned row each row is a copy of
// (owned rows map to themselves). This is the ghost -> owner mapping of a periodic single-rank system.
absl::StatusOr<std::vector<int64_t>> SelfPlanOwners(const PlanView& plan);

}  // namespace deepmd::ops

#endif  // DEEPMD_OPS_PLAN_H_
