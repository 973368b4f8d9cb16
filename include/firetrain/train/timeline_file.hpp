/// @brief `train --timeline`: every rank's Timeline gathered into one Chrome trace file.
#pragma once

#include <string>

namespace ft {

class Communicator;
class Timeline;

/// Collective. Rank 0 writes `path` atomically: {"traceEvents": [...]} with one process per
/// rank (pid = rank, named "rank R (host)"), and returns a table of timeline_stats() per rank
/// to print; other ranks return "". A failed write throws on rank 0 only (after the gathers).
std::string write_timeline(Communicator& comm, const Timeline& tl, const std::string& path);

/// Fails early (ft::InputError, exit code 2) when `path` cannot be created.
void probe_timeline_path(const std::string& path);

}  // namespace ft
