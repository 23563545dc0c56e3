#include "deepmd/ops/exchange.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace deepmd::ops {
namespace {

// Tags of our messages: far from LAMMPS's (0) and distinct per stage, so a message can never be
// matched by another stage's receive even when peers run ahead.
constexpr int kTagBase = 7100;
constexpr int kTagRange = 20000;
int StageTag(int32_t stage) { return kTagBase + stage % kTagRange; }

template <typename T>
MPI_Datatype MpiType();
template <>
MPI_Datatype MpiType<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype MpiType<double>() {
  return MPI_DOUBLE;
}

// Adds the lifetime of the enclosing call to one of the totals.
class TotalTimer {
 public:
  TotalTimer(double& seconds, int64_t& calls) : seconds_(seconds), start_(std::chrono::steady_clock::now()) { ++calls; }
  ~TotalTimer() { seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  double& seconds_;
  std::chrono::steady_clock::time_point start_;
};

// Per-thread buffers reused across calls: no allocation per exchange once they have grown.
struct Scratch {
  std::vector<unsigned char> bytes;
  std::vector<MPI_Request> requests;
  std::vector<int32_t> request_message;  // message index of each request (receives) or -1
  template <typename T>
  T* Rows(int64_t rows, int64_t width) {
    const size_t need = static_cast<size_t>(rows * width) * sizeof(T);
    if (bytes.size() < need) bytes.resize(need);
    return reinterpret_cast<T*>(bytes.data());
  }
};
thread_local Scratch scratch;

// The communicator named by the plan, checked against this process.
absl::StatusOr<MPI_Comm> Communicator(const PlanView& plan) {
  if (!plan.uses_mpi()) return MPI_COMM_NULL;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return absl::FailedPreconditionError(
        "the ghost-exchange plan names an MPI communicator but MPI is not initialized (or already "
        "finalized); build single-process plans with the 'no communicator' sentinel");
  }
  MPI_Comm comm = MPI_Comm_f2c(plan.communicator());
  int rank = -1, size = 0;
  if (comm == MPI_COMM_NULL || MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ghost-exchange plan's communicator handle ", plan.communicator(), " is not valid"));
  }
  if (rank != plan.rank() || size != plan.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the ghost-exchange plan was built for rank ", plan.rank(), " of ",
                                                   plan.size(), ", but this process is rank ", rank, " of ", size,
                                                   " on the plan's communicator"));
  }
  return comm;
}

absl::Status CheckCounts(const PlanView& plan, int64_t width) {
  if (width < 0) return absl::InvalidArgumentError(absl::StrCat("feature width is ", width));
  const int64_t rows = std::max<int64_t>(plan.nrows(), 1);
  if (width > 0 && rows > std::numeric_limits<int>::max() / width) {
    return absl::InvalidArgumentError(
        absl::StrCat("a message of ", plan.nrows(), " rows x ", width, " features exceeds MPI's int element count"));
  }
  return absl::OkStatus();
}

// Checks that each completed receive got exactly the rows the plan expects (a mismatch means the
// peers' plans disagree).
template <typename T>
absl::Status CheckReceived(const PlanView& plan, int32_t stage, std::vector<MPI_Status>& statuses, int64_t width,
                           bool reverse) {
  for (size_t r = 0; r < scratch.requests.size(); ++r) {
    const int32_t m = scratch.request_message[r];
    if (m < 0) continue;
    const Message msg = plan.message(m);
    int got = 0;
    MPI_Get_count(&statuses[r], MpiType<T>(), &got);
    if (int64_t{got} != int64_t{msg.count} * width) {
      return absl::InternalError(absl::StrCat(
          reverse ? "reverse" : "forward", " ghost exchange, stage ", stage, ": rank ", plan.rank(), " expected ",
          msg.count, " rows from rank ", msg.peer, " but received ", width ? got / width : got,
          ": the ranks' plans disagree (were they built from the same decomposition?)"));
    }
  }
  return absl::OkStatus();
}

std::vector<MPI_Status>& Statuses(size_t n) {
  thread_local std::vector<MPI_Status> statuses;
  if (statuses.size() < n) statuses.resize(n);
  return statuses;
}

// to += from, for one row (restrict: lets the compiler vectorise).
template <typename T>
void AddRow(T* __restrict to, const T* __restrict from, int64_t width) {
  for (int64_t k = 0; k < width; ++k) to[k] += from[k];
}

// Calls f(send, recv) for the k-th self send and the k-th self receive of a stage.
template <typename F>
void ForEachSelfPair(const PlanView& plan, int32_t stage, F f) {
  const int32_t first = plan.stage_first_message(stage), end = first + plan.stage_num_messages(stage);
  int32_t recv = first;
  for (int32_t s = first; s < end; ++s) {
    const Message send = plan.message(s);
    if (send.kind != MessageKind::kSend || !plan.is_self(send)) continue;
    Message r;
    do {
      r = plan.message(recv++);
    } while (!(r.kind == MessageKind::kRecv && plan.is_self(r)));  // validated: it exists
    f(send, r);
  }
}

}  // namespace

template <typename T>
absl::Status ExchangeGhostsForward(const PlanView& plan, const T* in, T* out, int64_t width) {
  TotalTimer timer(exchange_totals().forward_seconds, exchange_totals().forward_calls);
  if (absl::Status s = CheckCounts(plan, width); !s.ok()) return s;
  absl::StatusOr<MPI_Comm> comm = Communicator(plan);
  if (!comm.ok()) return comm.status();
  const size_t row_bytes = static_cast<size_t>(width) * sizeof(T);
  if (plan.nlocal() > 0 && width > 0) std::memcpy(out, in, plan.nlocal() * row_bytes);

  for (int32_t stage = 0; stage < plan.num_stages(); ++stage) {
    const int32_t first = plan.stage_first_message(stage), end = first + plan.stage_num_messages(stage);
    scratch.requests.clear();
    scratch.request_message.clear();
    // Receives land directly in their ghost rows.
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kRecv || plan.is_self(msg)) continue;
      scratch.requests.emplace_back();
      scratch.request_message.push_back(m);
      MPI_Irecv(out + int64_t{msg.first_row} * width, static_cast<int>(msg.count * width), MpiType<T>(), msg.peer,
                StageTag(stage), *comm, &scratch.requests.back());
    }
    // Sends are packed from rows filled before this stage (so ghosts travel on: multi-hop).
    T* pack = scratch.Rows<T>(plan.max_remote_send_rows_in_stage(stage), width);
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kSend || plan.is_self(msg)) continue;
      for (int32_t i = 0; i < msg.count; ++i) std::memcpy(pack + i * width, out + msg.indices[i] * width, row_bytes);
      scratch.requests.emplace_back();
      scratch.request_message.push_back(-1);
      MPI_Isend(pack, static_cast<int>(msg.count * width), MpiType<T>(), msg.peer, StageTag(stage), *comm,
                &scratch.requests.back());
      pack += msg.count * width;
    }
    // Periodic images of this rank's own rows: local copies.
    ForEachSelfPair(plan, stage, [&](const Message& send, const Message& recv) {
      for (int32_t i = 0; i < send.count; ++i) {
        std::memcpy(out + (int64_t{recv.first_row} + i) * width, out + send.indices[i] * width, row_bytes);
      }
    });
    if (!scratch.requests.empty()) {
      std::vector<MPI_Status>& statuses = Statuses(scratch.requests.size());
      MPI_Waitall(static_cast<int>(scratch.requests.size()), scratch.requests.data(), statuses.data());
      if (absl::Status s = CheckReceived<T>(plan, stage, statuses, width, false); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ExchangeGhostsReverse(const PlanView& plan, const T* in, T* out, int64_t width) {
  TotalTimer timer(exchange_totals().reverse_seconds, exchange_totals().reverse_calls);
  if (absl::Status s = CheckCounts(plan, width); !s.ok()) return s;
  absl::StatusOr<MPI_Comm> comm = Communicator(plan);
  if (!comm.ok()) return comm.status();
  const size_t row_bytes = static_cast<size_t>(width) * sizeof(T);
  // Ghost rows that later stages add into must be copied before being sent on; otherwise they are
  // sent straight from the input and only the owned rows are copied.
  const T* ghost_source = plan.forwards_ghosts() ? out : in;
  const int64_t copied_rows = plan.forwards_ghosts() ? plan.nrows() : plan.nlocal();
  if (copied_rows > 0 && width > 0) std::memcpy(out, in, copied_rows * row_bytes);
  auto add_rows = [&](const int32_t* rows, int32_t count, const T* from) {
    for (int32_t i = 0; i < count; ++i) AddRow(out + int64_t{rows[i]} * width, from + int64_t{i} * width, width);
  };

  for (int32_t stage = plan.num_stages() - 1; stage >= 0; --stage) {
    const int32_t first = plan.stage_first_message(stage), end = first + plan.stage_num_messages(stage);
    scratch.requests.clear();
    scratch.request_message.clear();
    // What was sent forward comes back into scratch, to be added into the rows it was read from.
    T* unpack = scratch.Rows<T>(plan.max_remote_send_rows_in_stage(stage), width);
    T* next = unpack;
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kSend || plan.is_self(msg)) continue;
      scratch.requests.emplace_back();
      scratch.request_message.push_back(m);
      MPI_Irecv(next, static_cast<int>(msg.count * width), MpiType<T>(), msg.peer, StageTag(stage), *comm,
                &scratch.requests.back());
      next += msg.count * width;
    }
    // What was received forward goes back straight from its (contiguous) ghost rows.
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kRecv || plan.is_self(msg)) continue;
      scratch.requests.emplace_back();
      scratch.request_message.push_back(-1);
      MPI_Isend(ghost_source + int64_t{msg.first_row} * width, static_cast<int>(msg.count * width), MpiType<T>(),
                msg.peer, StageTag(stage), *comm, &scratch.requests.back());
    }
    // Self pairs: the stage's ghost rows are disjoint from the rows they were copied from.
    ForEachSelfPair(plan, stage, [&](const Message& send, const Message& recv) {
      add_rows(send.indices.data(), send.count, ghost_source + int64_t{recv.first_row} * width);
    });
    if (!scratch.requests.empty()) {
      std::vector<MPI_Status>& statuses = Statuses(scratch.requests.size());
      MPI_Waitall(static_cast<int>(scratch.requests.size()), scratch.requests.data(), statuses.data());
      if (absl::Status s = CheckReceived<T>(plan, stage, statuses, width, true); !s.ok()) return s;
    }
    next = unpack;
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kSend || plan.is_self(msg)) continue;
      add_rows(msg.indices.data(), msg.count, next);
      next += msg.count * width;
    }
  }
  // The forward overwrote every ghost row, so ghost inputs have no influence: zero gradient.
  if (plan.nghost() > 0 && width > 0) std::memset(out + int64_t{plan.nlocal()} * width, 0, plan.nghost() * row_bytes);
  return absl::OkStatus();
}

ExchangeTotals& exchange_totals() {
  static ExchangeTotals totals;
  return totals;
}

template absl::Status ExchangeGhostsForward<float>(const PlanView&, const float*, float*, int64_t);
template absl::Status ExchangeGhostsForward<double>(const PlanView&, const double*, double*, int64_t);
template absl::Status ExchangeGhostsReverse<float>(const PlanView&, const float*, float*, int64_t);
template absl::Status ExchangeGhostsReverse<double>(const PlanView&, const double*, double*, int64_t);

}  // namespace deepmd::ops
