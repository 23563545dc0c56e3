#include "deepmd/lammps/swap_pattern.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "deepmd/ops/plan.h"

namespace deepmd::lammps {
namespace {

// A discovery row: {rank, message, stage}, exact integers in doubles.
void WriteRows(int n, int rank, int message, int stage, double* buf) {
  for (int i = 0; i < n; ++i) {
    buf[SwapPattern::kWordsPerRow * i] = rank;
    buf[SwapPattern::kWordsPerRow * i + 1] = message;
    buf[SwapPattern::kWordsPerRow * i + 2] = stage;
  }
}

}  // namespace

void SwapPattern::Fail(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
}

void SwapPattern::Begin() {
  events_.clear();
  sends_.clear();
  receives_.clear();
  pack_events_.clear();
  round_ = 0;
  error_ = absl::OkStatus();
}

void SwapPattern::BeginForward() {
  ++round_;
  next_pack_ = 0;
  stage_ = 0;
  last_was_unpack_ = false;
  changed_ = false;
}

int SwapPattern::PackForward(int n, const int* send_rows, int rank, double* buf) {
  int event;
  if (round_ == 1) {
    if (last_was_unpack_) ++stage_;  // a pack after an unpack: a new swap
    last_was_unpack_ = false;
    event = static_cast<int>(events_.size());
    events_.push_back({true, n > 0 ? static_cast<int>(sends_.size()) : -1, stage_});
    if (n > 0) sends_.push_back({std::vector<int32_t>(send_rows, send_rows + n), event});
    pack_events_.push_back(event);
  } else if (next_pack_ < static_cast<int>(pack_events_.size())) {
    event = pack_events_[next_pack_];
    const int message = events_[event].message;
    if ((message < 0 ? 0 : static_cast<int>(sends_[message].rows.size())) != n) {
      Fail(absl::InternalError(absl::StrCat("pack call ", next_pack_, " of discovery round ", round_, " sends ", n,
                                            " rows, in round 1 it sent a different number")));
    }
  } else {
    Fail(absl::InternalError(
        absl::StrCat("discovery round ", round_, " made more pack calls than round 1 (", pack_events_.size(), ")")));
    WriteRows(n, rank, -1, 0, buf);
    return kWordsPerRow * n;
  }
  ++next_pack_;
  WriteRows(n, rank, events_[event].message, events_[event].stage, buf);
  return kWordsPerRow * n;
}

void SwapPattern::UnpackForward(int n, int first_row, const double* buf) {
  if (round_ == 1) {
    last_was_unpack_ = true;
    if (n == 0) {
      events_.push_back({false, -1, stage_});
      return;
    }
    stage_ = std::max(stage_, static_cast<int>(buf[2]));  // the swap is at least the sender's
    const int event = static_cast<int>(events_.size());
    events_.push_back({false, static_cast<int>(receives_.size()), stage_});
    receives_.push_back({first_row, n, event, static_cast<int>(buf[0]), static_cast<int>(buf[1])});
    return;
  }
  if (n == 0) return;
  const int r = ReceiveAt(first_row, n);
  if (r < 0) return;
  if (receives_[r].peer != static_cast<int>(buf[0]) || receives_[r].sender_message != static_cast<int>(buf[1])) {
    Fail(absl::InternalError(absl::StrCat("ghost rows from ", first_row, " came from another message in round ", round_,
                                          " than in round 1")));
    return;
  }
  changed_ |= Raise(receives_[r].event, static_cast<int>(buf[2]));
}

void SwapPattern::BeginReverse() {
  if (round_ == 1) {
    // Receives arrive in any order (tiled: MPI_Waitany); from now on they are kept in ghost-row order.
    std::sort(receives_.begin(), receives_.end(),
              [](const Receive& a, const Receive& b) { return a.first_row < b.first_row; });
    for (size_t r = 0; r < receives_.size(); ++r) events_[receives_[r].event].message = static_cast<int>(r);
  }
  changed_ |= Propagate();
}

int SwapPattern::PackReverse(int n, int first_row, int rank, double* buf) {
  if (n == 0) return 0;
  const int r = ReceiveAt(first_row, n);
  if (r < 0) {
    WriteRows(n, rank, -1, 0, buf);
  } else {
    WriteRows(n, rank, receives_[r].sender_message, events_[receives_[r].event].stage, buf);
  }
  return kWordsPerRow * n;
}

void SwapPattern::UnpackReverse(int n, const double* buf) {
  if (n == 0) return;
  const int peer = static_cast<int>(buf[0]), message = static_cast<int>(buf[1]);
  if (message < 0 || message >= static_cast<int>(sends_.size()) || static_cast<int>(sends_[message].rows.size()) != n) {
    Fail(absl::InternalError(absl::StrCat("the reverse pass returned ", n, " rows for send ", message, " of ",
                                          sends_.size(), ", which does not match what was sent")));
    return;
  }
  Send& send = sends_[message];
  if (round_ == 1 && send.peer < 0) {
    send.peer = peer;
  } else if (send.peer != peer) {
    Fail(absl::InternalError(absl::StrCat("send ", message, " was answered by ranks ", send.peer, " and ", peer)));
    return;
  }
  changed_ |= Raise(send.event, static_cast<int>(buf[2]));
}

bool SwapPattern::EndRound() {
  if (next_pack_ != static_cast<int>(pack_events_.size())) {
    Fail(absl::InternalError(absl::StrCat("discovery round ", round_, " made ", next_pack_,
                                          " pack calls, round 1 made ", pack_events_.size())));
  }
  for (size_t s = 0; s < sends_.size(); ++s) {
    if (sends_[s].peer < 0) {
      Fail(absl::InternalError(
          absl::StrCat("send ", s, " (", sends_[s].rows.size(), " rows) got no answer in the reverse pass")));
    }
  }
  changed_ |= Propagate();
  return error_.ok() && changed_;
}

bool SwapPattern::AnotherRound(bool any_rank_changed) {
  if (!any_rank_changed) return false;
  if (round_ >= kMaxRounds) {
    Fail(absl::InternalError(absl::StrCat("the stages of the swaps did not settle in ", kMaxRounds, " rounds")));
    return false;
  }
  return true;
}

bool SwapPattern::Raise(int event, int stage) {
  if (events_[event].stage >= stage) return false;
  events_[event].stage = stage;
  return true;
}

bool SwapPattern::Propagate() {
  bool changed = false;
  for (bool again = true; again;) {
    again = false;
    for (size_t e = 1; e < events_.size(); ++e) {
      const bool new_swap = !events_[e - 1].pack && events_[e].pack;
      again |= Raise(static_cast<int>(e), events_[e - 1].stage + (new_swap ? 1 : 0));
    }
    for (size_t r = 1; r < receives_.size(); ++r) {
      again |= Raise(receives_[r].event, events_[receives_[r - 1].event].stage);
    }
    changed |= again;
  }
  return changed;
}

int SwapPattern::ReceiveAt(int first_row, int count) {
  auto it = std::lower_bound(receives_.begin(), receives_.end(), first_row,
                             [](const Receive& r, int row) { return r.first_row < row; });
  if (it == receives_.end() || it->first_row != first_row || it->count != count) {
    Fail(absl::InternalError(absl::StrCat("round ", round_, " passes ", count, " ghost rows from row ", first_row,
                                          ", which round 1 did not receive")));
    return -1;
  }
  return static_cast<int>(it - receives_.begin());
}

int SwapPattern::num_stages() const {
  int stages = 0;
  for (const Event& e : events_) stages = std::max(stages, e.stage + 1);
  return stages;
}

absl::StatusOr<std::vector<int32_t>> SwapPattern::BuildPlan(int32_t communicator, int rank, int size, int nlocal,
                                                            int nghost, int num_stages) const {
  if (!error_.ok()) {
    return absl::InternalError(absl::StrCat("LAMMPS's swap pattern could not be learnt: ", error_.message()));
  }
  ops::PlanBuilder builder(communicator, rank, size, nlocal, nghost);
  std::vector<std::pair<int, int>> last_from;  // per peer of a stage: its last message received
  for (int s = 0; s < num_stages; ++s) {
    builder.BeginStage();
    for (const Send& send : sends_) {
      if (events_[send.event].stage == s) builder.Send(send.peer, send.rows);
    }
    last_from.clear();
    for (const Receive& r : receives_) {
      if (events_[r.event].stage != s) continue;
      // Two ranks match their messages of a stage in the order listed: sends in pack order, receives in
      // row order. LAMMPS's own matching (tag 0, posted in order) makes these agree; check it.
      auto it = std::find_if(last_from.begin(), last_from.end(), [&](const auto& p) { return p.first == r.peer; });
      if (it == last_from.end()) {
        last_from.emplace_back(r.peer, r.sender_message);
      } else if (it->second >= r.sender_message) {
        return absl::InternalError(absl::StrCat("LAMMPS's swap pattern: rank ", r.peer, "'s messages ", it->second,
                                                " and ", r.sender_message, " land in reverse order of rows"));
      } else {
        it->second = r.sender_message;
      }
      builder.Receive(r.peer, r.count, r.first_row);
    }
  }
  for (const Event& e : events_) {
    if (e.stage >= num_stages) return absl::InternalError("SwapPattern::BuildPlan: fewer stages than swaps");
  }
  absl::StatusOr<std::vector<int32_t>> plan = builder.Build();
  if (!plan.ok()) {
    return absl::InternalError(
        absl::StrCat("LAMMPS's swap pattern does not form a valid exchange plan (", plan.status().message(), ")"));
  }
  return plan;
}

}  // namespace deepmd::lammps
