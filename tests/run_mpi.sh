#!/usr/bin/env bash
# Runs a test program on N MPI ranks: run_mpi.sh N PROGRAM [ARGS...]. Used by every multi-rank sh_test.
# A hung job is killed (timeout) so a deadlock fails the test instead of stalling the suite.
set -uo pipefail
nranks="$1"
shift
export OMPI_MCA_rmaps_base_oversubscribe=1   # more ranks than cores
export OMPI_MCA_plm_rsh_agent=false   # never try ssh
timeout --signal=KILL "${MPI_TEST_TIMEOUT:-240}" \
  mpirun -np "$nranks" --oversubscribe --bind-to none "$@"
status=$?
[ "$status" -eq 137 ] && echo "run_mpi.sh: killed after ${MPI_TEST_TIMEOUT:-240} s (hang?)" >&2
exit "$status"
