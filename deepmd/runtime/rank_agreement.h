// The one cross-rank failure protocol of the runtime and of its callers (the LAMMPS pair style): ranks
// agree whether any of them failed, then every rank gets the failing rank's message, so that a failure
// on one rank stops all of them with the message worth reading instead of leaving peers waiting.
#ifndef DEEPMD_RUNTIME_RANK_AGREEMENT_H_
#define DEEPMD_RUNTIME_RANK_AGREEMENT_H_

#include <mpi.h>

#include <optional>

#include "absl/status/status.h"

namespace deepmd::runtime {

// Collective over `comm` (every rank must call it; MPI_COMM_NULL, one rank or MPI not running: returns
// `local`). One MPI_Allreduce of an int when every rank is fine; otherwise the lowest rank that failed
// itself broadcasts its code and message, and every rank returns "rank R: <message>" with that code
// (FailedRank says R; on the other ranks IsPeerFailure is true). A status agreed before is not
// prefixed again, and peers' statuses do not count as failures of their own.
absl::Status AgreeAcrossRanks(const absl::Status& local, MPI_Comm comm);

// The rank whose failure an agreed status reports; none for a status no agreement produced.
std::optional<int> FailedRank(const absl::Status& status);

// Whether `status` is the error a rank got because another rank failed, rather than its own.
bool IsPeerFailure(const absl::Status& status);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_RANK_AGREEMENT_H_
