/// @brief The `firetrain` binary: thin subcommands over the library. Exceptions become a clear
/// message and an exit code (2: bad usage or input, 1: other); with several ranks, MPI_Abort.
#include <mpi.h>
#include <signal.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/train/trainer.hpp"

namespace {

/// SIGTERM (Slurm's warning before a kill; mpirun forwards it), SIGINT (Ctrl-C) and SIGUSR1
/// (`sbatch --signal=USR1@120`; mpirun forwards it too) ask the trainer to finish the current
/// step, checkpoint and exit 0. A second signal ends the process at once.
void on_stop_signal(int sig) {
  if (ft::stop_requested()) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  ft::request_stop(sig);
}

void install_stop_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

void usage() {
  std::printf(
      "usage: firetrain <command> [options]   (firetrain <command> --help for its options)\n\n"
      "commands:\n"
      "  train     data-parallel training (run under mpirun -np N, or alone as 1 rank)\n"
      "  eval      top-1/top-5 accuracy and mean loss of weights or a checkpoint on a dataset\n"
      "  predict   write /logits (N, classes) of a dataset to an HDF5 file\n"
      "  export    write a model in the torch-h5 layout (from a checkpoint or freshly initialized)\n"
      "  compress  Deep Compression: prune, fine-tune, k-means share, Huffman-code -> model file\n"
      "  convert   fashion-mnist | cifar10 | folder -> dataset HDF5\n"
      "  info      what a dataset, weights file or checkpoint holds; or an architecture's layers\n"
      "  sweep     train SqueezeNet variants (SR, pct3x3, bypass...): accuracy vs model size\n"
      "  bench     step: training throughput on synthetic data\n"
      "  --version build information: version, git commit, compiler, build type, backends\n");
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  int code = ft::kExitOk;
  try {
    if (argc < 2) {
      if (rank == 0) usage();
      code = ft::kExitBadInput;
    } else {
      std::string cmd = argv[1];
      char** sub = argv + 1;
      int nsub = argc - 1;
      if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        if (rank == 0) usage();
      } else if (cmd == "--version" || cmd == "version") {
        if (rank == 0) ft::cli::print_version();
      } else if (cmd == "train") {
        install_stop_handlers();
        code = ft::cli::cmd_train(nsub, sub);
      } else if (cmd == "eval") {
        code = ft::cli::cmd_eval(nsub, sub);
      } else if (cmd == "predict") {
        code = ft::cli::cmd_predict(nsub, sub);
      } else if (cmd == "export") {
        code = ft::cli::cmd_export(nsub, sub);
      } else if (cmd == "compress") {
        install_stop_handlers();
        code = ft::cli::cmd_compress(nsub, sub);
      } else if (cmd == "convert") {
        code = ft::cli::cmd_convert(nsub, sub);
      } else if (cmd == "info") {
        code = ft::cli::cmd_info(nsub, sub);
      } else if (cmd == "sweep") {
        install_stop_handlers();
        code = ft::cli::cmd_sweep(nsub, sub);
      } else if (cmd == "bench") {
        code = ft::cli::cmd_bench(nsub, sub);
      } else {
        throw ft::InputError("unknown command '" + cmd + "' (see firetrain --help)");
      }
    }
  } catch (const ft::Error& e) {
    std::fprintf(stderr, "firetrain: error: %s\n", e.what());
    code = e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "firetrain: error (rank %d): %s\n", rank, e.what());
    code = ft::kExitFailure;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  // Other ranks may be waiting in a collective: do not leave them hanging.
  if (code != ft::kExitOk && world > 1) MPI_Abort(MPI_COMM_WORLD, code);
  MPI_Finalize();
  return code;
}
