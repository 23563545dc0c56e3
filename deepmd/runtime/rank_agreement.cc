#include "deepmd/runtime/rank_agreement.h"

#include <climits>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace deepmd::runtime {
namespace {

constexpr char kFailedRankPayload[] = "deepmd.runtime/failed-rank";
constexpr char kPeerFailurePayload[] = "deepmd.runtime/peer-failure";

}  // namespace

absl::Status AgreeAcrossRanks(const absl::Status& local, MPI_Comm comm) {
  int initialized = 0, finalized = 0, size = 1, rank = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized || comm == MPI_COMM_NULL) return local;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  if (size < 2) return local;
  const bool own = !local.ok() && !IsPeerFailure(local);
  int mine = own ? rank : INT_MAX, first = INT_MAX;
  if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS) return local;
  if (first == INT_MAX) return local;

  // The failing rank's code and message, to every rank.
  std::string message;
  int header[2] = {static_cast<int>(local.code()), 0};
  if (rank == first) {
    message = FailedRank(local) ? std::string(local.message()) : absl::StrCat("rank ", rank, ": ", local.message());
    header[1] = static_cast<int>(message.size());
  }
  if (MPI_Bcast(header, 2, MPI_INT, first, comm) != MPI_SUCCESS) return local;
  message.resize(header[1]);
  if (MPI_Bcast(message.data(), header[1], MPI_CHAR, first, comm) != MPI_SUCCESS) return local;
  absl::Status agreed(static_cast<absl::StatusCode>(header[0]), message);
  agreed.SetPayload(kFailedRankPayload, absl::Cord(std::to_string(first)));
  if (rank != first) agreed.SetPayload(kPeerFailurePayload, absl::Cord("1"));
  return agreed;
}

std::optional<int> FailedRank(const absl::Status& status) {
  const auto payload = status.GetPayload(kFailedRankPayload);
  int rank = -1;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &rank)) return std::nullopt;
  return rank;
}

bool IsPeerFailure(const absl::Status& status) { return status.GetPayload(kPeerFailurePayload).has_value(); }

}  // namespace deepmd::runtime
