/* @brief A tiny MPI probe for launch/netns_cluster.sh: where each rank runs, and how long an
 * MPI_Allreduce of a given size takes, so a tbf rate limit can be seen taking effect.
 *
 * Plain C and MPI only (no firetrain), so it also checks a cluster while the tree is mid-edit:
 *   mpicc -O2 -o /tmp/netns_probe bench/netns_probe.c
 *   launch/netns_cluster.sh run -- -np 2 /tmp/netns_probe 100000000 3
 * Arguments: BYTES (default 100,000,000; rounded down to whole floats), REPEATS (default 3) and
 * MODE: "allreduce" (default) or "send" (rank 0 sends BYTES to rank n−1, which answers with an
 * empty message: the one-way link bandwidth, without the reduction's arithmetic).
 * Every rank prints its rank, host name and network namespace; rank 0 prints each repeat's time
 * (the maximum over ranks) and algbw / busbw as nccl-tests define them (busbw = algbw·2(n−1)/n;
 * in send mode both columns are bytes / time). Rank r contributes r + 1 everywhere, so every
 * element must come back as n(n+1)/2 exactly (send: as 1); any mismatch is counted and makes
 * the exit status 1.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The namespace name as `ip netns identify` would say it, or "?" (read via the shell, to stay
 * dependency-free). */
static void netns_name(char* out, size_t cap) {
  FILE* p = popen("ip netns identify 2>/dev/null", "r");
  snprintf(out, cap, "?");
  if (!p) return;
  if (fgets(out, (int)cap, p)) out[strcspn(out, "\n")] = 0;
  pclose(p);
  if (!out[0]) snprintf(out, cap, "(root)");
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  long long bytes = argc > 1 ? atoll(argv[1]) : 100000000LL;
  int repeats = argc > 2 ? atoi(argv[2]) : 3;
  const char* mode = argc > 3 ? argv[3] : "allreduce";
  int send_mode = strcmp(mode, "send") == 0;
  if (bytes < 4 || repeats < 1 || (!send_mode && strcmp(mode, "allreduce") != 0) ||
      (send_mode && n < 2)) {
    if (rank == 0)
      fprintf(stderr, "usage: netns_probe [BYTES >= 4] [REPEATS >= 1] [allreduce|send]\n");
    MPI_Finalize();
    return 2;
  }
  long long count = bytes / 4;

  char host[256] = {0}, ns[128];
  gethostname(host, sizeof host - 1);
  netns_name(ns, sizeof ns);
  char line[512];
  snprintf(line, sizeof line, "rank %d of %d: host %s, netns %s", rank, n, host, ns);
  /* Print in rank order through rank 0, so lines do not interleave. */
  if (rank == 0) {
    printf("%s\n", line);
    for (int r = 1; r < n; ++r) {
      MPI_Recv(line, sizeof line, MPI_CHAR, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      printf("%s\n", line);
    }
    fflush(stdout);
  } else {
    MPI_Send(line, sizeof line, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
  }

  float* buf = malloc((size_t)count * sizeof(float));
  if (!buf) MPI_Abort(MPI_COMM_WORLD, 1);
  const float expect = send_mode ? 1.0f : (float)n * (float)(n + 1) / 2.0f;
  const int last = n - 1;
  long long wrong = 0;
  if (rank == 0)
    printf("# mode %s, %d ranks\n# %14s %6s %10s %12s %12s\n", mode, n, "bytes", "repeat", "time_s",
           "algbw_GB/s", "busbw_GB/s");
  for (int it = 0; it < repeats; ++it) {
    for (long long i = 0; i < count; ++i) buf[i] = send_mode ? (rank == 0) : (float)(rank + 1);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    /* MPI counts are int: move in chunks of at most 2^30 floats (4 GiB). */
    for (long long off = 0; off < count; off += (1LL << 30)) {
      long long c = count - off < (1LL << 30) ? count - off : (1LL << 30);
      if (!send_mode)
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      else if (rank == 0)
        MPI_Send(buf + off, (int)c, MPI_FLOAT, last, 1, MPI_COMM_WORLD);
      else if (rank == last)
        MPI_Recv(buf + off, (int)c, MPI_FLOAT, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    if (send_mode && rank == 0)
      MPI_Recv(NULL, 0, MPI_BYTE, last, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (send_mode && rank == last) MPI_Send(NULL, 0, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
    double dt = MPI_Wtime() - t0, dmax = 0;
    MPI_Reduce(&dt, &dmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (!send_mode || rank == last)
      for (long long i = 0; i < count; ++i) wrong += buf[i] != expect;
    if (rank == 0) {
      double algbw = (double)count * 4 / dmax / 1e9;
      double busbw = send_mode ? algbw : algbw * 2.0 * (n - 1) / n;
      printf("  %14lld %6d %10.4f %12.4f %12.4f\n", count * 4, it, dmax, algbw, busbw);
      fflush(stdout);
    }
  }
  long long wrong_all = 0;
  MPI_Allreduce(&wrong, &wrong_all, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("# wrong elements: %lld %s\n", wrong_all, wrong_all ? "WRONG" : "OK");
  free(buf);
  MPI_Finalize();
  return wrong_all ? 1 : 0;
}
