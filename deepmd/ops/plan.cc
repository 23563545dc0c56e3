#include "deepmd/ops/plan.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace deepmd::ops {
namespace {

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid ghost-exchange plan: ", what));
}

int64_t TableEnd(int32_t nstages, int32_t nmessages) {
  return int64_t{kHeaderWords} + int64_t{kStageWords} * nstages + int64_t{kMessageWords} * nmessages;
}

// Within a stage, the k-th message to self pairs with the k-th message from self (no allocation:
// this runs on every exchange).
bool SelfMessagesPairUp(const int32_t* messages, int32_t count, int32_t rank) {
  auto next_self = [&](int32_t from, MessageKind kind) {
    while (from < count && !(messages[kMessageWords * from] == static_cast<int32_t>(kind) &&
                             messages[kMessageWords * from + 1] == rank)) {
      ++from;
    }
    return from;
  };
  int32_t send = next_self(0, MessageKind::kSend), recv = next_self(0, MessageKind::kRecv);
  while (send < count && recv < count) {
    if (messages[kMessageWords * send + 2] != messages[kMessageWords * recv + 2]) return false;
    send = next_self(send + 1, MessageKind::kSend);
    recv = next_self(recv + 1, MessageKind::kRecv);
  }
  return send == count && recv == count;
}

}  // namespace

absl::StatusOr<PlanView> PlanView::Parse(absl::Span<const int32_t> w) {
  if (w.size() < kHeaderWords) {
    return Invalid(absl::StrCat("it has ", w.size(), " words, fewer than the ", int{kHeaderWords}, "-word header"));
  }
  if (w[kMagic] != kPlanMagic) {
    return Invalid(absl::StrCat("magic is ", w[kMagic], ", expected ", kPlanMagic, ": this tensor is not a plan"));
  }
  if (w[kVersion] != kPlanVersion) {
    return Invalid(absl::StrCat("version is ", w[kVersion], "; this library reads version ", kPlanVersion,
                                ": rebuild the plan with this library"));
  }
  if (w[kLength] < 0 || static_cast<size_t>(w[kLength]) != w.size()) {
    return Invalid(absl::StrCat("length is ", w[kLength], " but the tensor has ", w.size(), " words"));
  }
  const int32_t rank = w[kRank], size = w[kSize];
  if (size < 1 || rank < 0 || rank >= size) {
    return Invalid(absl::StrCat("rank ", rank, " / size ", size, " is not a rank of a communicator"));
  }
  if (w[kCommunicator] == kNoCommunicator && size != 1) {
    return Invalid(absl::StrCat("communicator is none (single process) but size is ", size));
  }
  const int32_t nlocal = w[kNLocal], nghost = w[kNGhost];
  if (nlocal < 0) return Invalid(absl::StrCat("nlocal is ", nlocal));
  if (nghost < 0) return Invalid(absl::StrCat("nghost is ", nghost));
  const int64_t nrows = int64_t{nlocal} + nghost;
  if (nrows > std::numeric_limits<int32_t>::max()) {
    return Invalid(absl::StrCat("nlocal + nghost = ", nrows, " exceeds int32"));
  }
  const int32_t nstages = w[kNStages], nmessages = w[kNMessages];
  if (nstages < 0) return Invalid(absl::StrCat("nstages is ", nstages));
  if (nmessages < 0) return Invalid(absl::StrCat("nmessages is ", nmessages));
  const int64_t table_end = TableEnd(nstages, nmessages);
  if (table_end > static_cast<int64_t>(w.size())) {
    return Invalid(absl::StrCat(nstages, " stages and ", nmessages, " messages need ", table_end,
                                " words; the plan has ", w.size()));
  }

  const int32_t* stages = w.data() + kHeaderWords;
  const int32_t* messages = stages + int64_t{kStageWords} * nstages;
  int64_t next_message = 0;
  int64_t filled = nlocal;  // rows [0, filled) hold data: owned rows, then ghosts in fill order
  bool forwards_ghosts = false;
  for (int32_t s = 0; s < nstages; ++s) {
    const int32_t first = stages[kStageWords * s], count = stages[kStageWords * s + 1];
    if (first != next_message || count < 0 || int64_t{first} + count > nmessages) {
      return Invalid(absl::StrCat("stage ", s, " lists messages [", first, ", ", int64_t{first} + count,
                                  "); expected to start at ", next_message, " and end by ", nmessages));
    }
    next_message = int64_t{first} + count;
    const int64_t readable = filled;  // a stage may send only rows filled before it
    for (int32_t m = first; m < first + count; ++m) {
      const int32_t* msg = messages + int64_t{kMessageWords} * m;
      const int32_t kind = msg[0], peer = msg[1], rows = msg[2], where = msg[3];
      auto name = [&] { return absl::StrCat("stage ", s, " message ", m, ": "); };
      if (kind != static_cast<int32_t>(MessageKind::kSend) && kind != static_cast<int32_t>(MessageKind::kRecv)) {
        return Invalid(absl::StrCat(name(), "kind is ", kind, " (0 = send, 1 = receive)"));
      }
      if (peer < 0 || peer >= size) {
        return Invalid(absl::StrCat(name(), "peer rank ", peer, " is outside [0, ", size, ")"));
      }
      if (rows < 0) return Invalid(absl::StrCat(name(), "count is ", rows));
      if (kind == static_cast<int32_t>(MessageKind::kRecv)) {
        if (where != filled) {
          return Invalid(absl::StrCat(name(), "receive lands at row ", where,
                                      " but ghost rows are filled in order and ", "the next unfilled row is ", filled));
        }
        if (filled + rows > nrows) {
          return Invalid(
              absl::StrCat(name(), "receive of ", rows, " rows at row ", where, " overruns nlocal + nghost = ", nrows));
        }
        filled += rows;
      } else {
        if (where < table_end || int64_t{where} + rows > static_cast<int64_t>(w.size())) {
          return Invalid(absl::StrCat(name(), "send indices at words [", where, ", ", int64_t{where} + rows,
                                      ") are outside the index area [", table_end, ", ", w.size(), ")"));
        }
        for (int32_t i = 0; i < rows; ++i) {
          const int32_t row = w[where + i];
          if (row < 0 || row >= readable) {
            return Invalid(absl::StrCat(name(), "sends row ", row, ", but only rows [0, ", readable,
                                        ") hold data before this stage (owned rows and earlier stages' ghosts)"));
          }
          forwards_ghosts |= row >= nlocal;
        }
      }
    }
    if (!SelfMessagesPairUp(messages + int64_t{kMessageWords} * first, count, rank)) {
      return Invalid(absl::StrCat("stage ", s, ": the k-th self send and the k-th self receive of a stage ",
                                  "must exist together and have equal counts"));
    }
  }
  if (next_message != nmessages) {
    return Invalid(absl::StrCat("stages list ", next_message, " messages; nmessages is ", nmessages));
  }
  if (filled != nrows) {
    return Invalid(absl::StrCat("receives fill ", filled - nlocal, " ghost rows; nghost is ", nghost));
  }
  return PlanView(w, forwards_ghosts);
}

int32_t PlanView::stage_first_message(int32_t stage) const { return words_[kHeaderWords + kStageWords * stage]; }

int32_t PlanView::stage_num_messages(int32_t stage) const { return words_[kHeaderWords + kStageWords * stage + 1]; }

Message PlanView::message(int32_t index) const {
  const int32_t* msg =
      words_.data() + kHeaderWords + int64_t{kStageWords} * num_stages() + int64_t{kMessageWords} * index;
  Message m;
  m.kind = static_cast<MessageKind>(msg[0]);
  m.peer = msg[1];
  m.count = msg[2];
  m.first_row = m.kind == MessageKind::kRecv ? msg[3] : -1;
  if (m.kind == MessageKind::kSend) m.indices = words_.subspan(msg[3], m.count);
  return m;
}

int64_t PlanView::max_remote_send_rows_in_stage(int32_t stage) const {
  int64_t rows = 0;
  const int32_t first = stage_first_message(stage);
  for (int32_t m = first; m < first + stage_num_messages(stage); ++m) {
    const Message msg = message(m);
    if (msg.kind == MessageKind::kSend && !is_self(msg)) rows += msg.count;
  }
  return rows;
}

int64_t PlanView::max_remote_send_rows_per_stage() const {
  int64_t rows = 0;
  for (int32_t s = 0; s < num_stages(); ++s) rows = std::max(rows, max_remote_send_rows_in_stage(s));
  return rows;
}

PlanBuilder::PlanBuilder(int32_t communicator, int32_t rank, int32_t size, int32_t nlocal, int32_t nghost)
    : communicator_(communicator), rank_(rank), size_(size), nlocal_(nlocal), nghost_(nghost) {}

PlanBuilder& PlanBuilder::BeginStage() {
  stages_.emplace_back();
  return *this;
}

PlanBuilder& PlanBuilder::Send(int32_t peer, absl::Span<const int32_t> rows) {
  if (stages_.empty()) {
    if (error_.ok()) error_ = absl::FailedPreconditionError("PlanBuilder::Send before BeginStage");
    return *this;
  }
  stages_.back().push_back(
      {MessageKind::kSend, peer, static_cast<int32_t>(rows.size()), -1, {rows.begin(), rows.end()}});
  return *this;
}

PlanBuilder& PlanBuilder::Receive(int32_t peer, int32_t count, int32_t first_row) {
  if (stages_.empty()) {
    if (error_.ok()) error_ = absl::FailedPreconditionError("PlanBuilder::Receive before BeginStage");
    return *this;
  }
  stages_.back().push_back({MessageKind::kRecv, peer, count, first_row, {}});
  return *this;
}

absl::StatusOr<std::vector<int32_t>> PlanBuilder::Build() const {
  if (!error_.ok()) return error_;
  int64_t nmessages = 0, nindices = 0;
  for (const auto& stage : stages_) {
    nmessages += static_cast<int64_t>(stage.size());
    for (const auto& m : stage) nindices += static_cast<int64_t>(m.indices.size());
  }
  const int64_t table_end = TableEnd(static_cast<int32_t>(stages_.size()), static_cast<int32_t>(nmessages));
  const int64_t length = table_end + nindices;
  if (length > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(absl::StrCat("a plan of ", length, " words exceeds int32 offsets"));
  }
  std::vector<int32_t> w(static_cast<size_t>(length));
  w[kMagic] = kPlanMagic;
  w[kVersion] = kPlanVersion;
  w[kLength] = static_cast<int32_t>(length);
  w[kCommunicator] = communicator_;
  w[kRank] = rank_;
  w[kSize] = size_;
  w[kNLocal] = nlocal_;
  w[kNGhost] = nghost_;
  w[kNStages] = static_cast<int32_t>(stages_.size());
  w[kNMessages] = static_cast<int32_t>(nmessages);
  int32_t message = 0;
  int64_t index_at = table_end;
  int32_t* stage_table = w.data() + kHeaderWords;
  int32_t* message_table = stage_table + kStageWords * stages_.size();
  for (size_t s = 0; s < stages_.size(); ++s) {
    stage_table[kStageWords * s] = message;
    stage_table[kStageWords * s + 1] = static_cast<int32_t>(stages_[s].size());
    for (const auto& m : stages_[s]) {
      int32_t* out = message_table + int64_t{kMessageWords} * message++;
      out[0] = static_cast<int32_t>(m.kind);
      out[1] = m.peer;
      out[2] = m.count;
      if (m.kind == MessageKind::kRecv) {
        out[3] = m.first_row;
      } else {
        out[3] = static_cast<int32_t>(index_at);
        std::copy(m.indices.begin(), m.indices.end(), w.begin() + index_at);
        index_at += static_cast<int64_t>(m.indices.size());
      }
    }
  }
  if (absl::StatusOr<PlanView> view = PlanView::Parse(w); !view.ok()) return view.status();
  return w;
}

absl::StatusOr<std::vector<int32_t>> CompactPlan(const PlanView& plan, absl::Span<const int32_t> new_row) {
  if (static_cast<int64_t>(new_row.size()) != plan.nrows()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CompactPlan: ", new_row.size(), " row indices for a plan of ", plan.nrows(), " rows"));
  }
  int32_t nlocal = 0, nghost = 0;
  for (int64_t r = 0; r < plan.nrows(); ++r) {
    if (new_row[r] < 0) continue;
    (r < plan.nlocal() ? nlocal : nghost) += 1;
  }
  PlanBuilder builder(plan.communicator(), plan.rank(), plan.size(), nlocal, nghost);
  std::vector<int32_t> rows;
  int32_t next_ghost = nlocal;
  for (int32_t s = 0; s < plan.num_stages(); ++s) {
    builder.BeginStage();
    const int32_t first = plan.stage_first_message(s);
    for (int32_t m = first; m < first + plan.stage_num_messages(s); ++m) {
      const Message msg = plan.message(m);
      if (msg.kind == MessageKind::kSend) {
        rows.clear();
        for (int32_t r : msg.indices) {
          if (new_row[r] >= 0) rows.push_back(new_row[r]);
        }
        builder.Send(msg.peer, rows);
      } else {
        int32_t kept = 0;
        for (int32_t i = 0; i < msg.count; ++i) kept += new_row[msg.first_row + i] >= 0;
        builder.Receive(msg.peer, kept, next_ghost);
        next_ghost += kept;
      }
    }
  }
  return builder.Build();
}

absl::StatusOr<std::vector<int64_t>> SelfPlanOwners(const PlanView& plan) {
  std::vector<int64_t> owner(plan.nrows());
  for (int64_t r = 0; r < plan.nlocal(); ++r) owner[r] = r;
  for (int32_t s = 0; s < plan.num_stages(); ++s) {
    const int32_t first = plan.stage_first_message(s), end = first + plan.stage_num_messages(s);
    int32_t recv = first;
    for (int32_t m = first; m < end; ++m) {
      const Message send = plan.message(m);
      if (!plan.is_self(send)) {
        return absl::FailedPreconditionError(absl::StrCat("stage ", s, " exchanges with rank ", send.peer,
                                                          ": owners of ghosts on other ranks are not known here"));
      }
      if (send.kind != MessageKind::kSend) continue;
      Message r;
      do {
        r = plan.message(recv++);
      } while (r.kind != MessageKind::kRecv);  // validated: self sends and receives pair up
      for (int32_t i = 0; i < send.count; ++i) owner[r.first_row + i] = owner[send.indices[i]];
    }
  }
  return owner;
}

}  // namespace deepmd::ops
