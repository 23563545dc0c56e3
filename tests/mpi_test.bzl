"""mpi_test: an sh_test that runs a program on N ranks through tests/run_mpi.sh."""

def mpi_test(name, binary, nranks, args = [], **kwargs):
    native.sh_test(
        name = name,
        srcs = ["//tests:run_mpi.sh"],
        args = [str(nranks), "$(location %s)" % binary] + args,
        data = [binary],
        tags = kwargs.pop("tags", []) + ["mpi"],
        **kwargs
    )
