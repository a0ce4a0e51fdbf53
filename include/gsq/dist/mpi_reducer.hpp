// gsq/dist/mpi_reducer.hpp — data-parallel fine-tuning over MPI: the trainer's
// GradientReducer (model/trainer.hpp) implemented with MPI_Iallgatherv.
//
// Only this header needs MPI (<mpi.h>); the core headers stay MPI-free, and CMake builds
// and installs it only with GSQ_WITH_MPI (find_package(MPI)). What travels per step are
// the LoRA / L4Q gradients of the micro-batches the rank owns plus each micro-batch's
// loss sum, one nonblocking gather per parameter group, started as soon as backward has
// finished the group (so block i's exchange overlaps block i−1's backward) and completed
// before the update. An allgather is pure data movement — every rank receives every
// rank's bytes unchanged — and the trainer adds the parts in micro-batch index order
// itself, so `mpirun -np 1`, `-np 2`, `-np 4` and a run without MPI give the same bits
// (MPI_Allreduce is not used: its summation order is up to the library).
//
//     gsq::dist::MpiSession mpi(argc, argv);        // MPI_Init / MPI_Finalize
//     gsq::dist::MpiReducer reducer;                  // MPI_COMM_WORLD
//     trainer.set_reducer(&reducer);                  // with TrainerConfig::micro_batches
//
// Errors: a rank that fails calls `abort_all(message)`, which prints the message with
// the rank's number and stops every rank (MPI_Abort), so a job never hangs in a
// collective waiting for a rank that is gone.
#pragma once

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/model/trainer.hpp"

GSQ_NAMESPACE_BEGIN
namespace dist {

/// MPI_Init on construction (unless already initialised), MPI_Finalize on destruction.
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised == 0) {
      MPI_Init(&argc, &argv);
      owner_ = true;
    }
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && finalized == 0) MPI_Finalize();
  }

 private:
  bool owner_ = false;
};

class MpiReducer final : public GradientReducer {
 public:
  explicit MpiReducer(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    MPI_Comm_size(comm_, &ranks_);
    MPI_Comm_rank(comm_, &rank_);
  }

  int ranks() const noexcept override { return ranks_; }
  int rank() const noexcept override { return rank_; }

  void start_allgather(std::span<const float> local, std::span<const std::int64_t> counts,
                       std::span<float> all) override {
    GSQ_CHECK(static_cast<int>(counts.size()) == ranks_, ErrorCode::kInvalidArgument,
              "MpiReducer::start_allgather: " + std::to_string(counts.size()) + " counts for " +
                  std::to_string(ranks_) + " ranks");
    // MPI reads the count and displacement arrays until the gather completes.
    Pending& g = pending_.emplace_back();
    g.counts.resize(static_cast<std::size_t>(ranks_));
    g.offsets.resize(static_cast<std::size_t>(ranks_));
    std::int64_t offset = 0;
    for (int r = 0; r < ranks_; ++r) {
      const std::int64_t c = counts[static_cast<std::size_t>(r)];
      GSQ_CHECK(c >= 0 && c <= INT_MAX && offset <= INT_MAX, ErrorCode::kInvalidExtent,
                "MpiReducer::start_allgather: " + std::to_string(c) + " floats from rank " + std::to_string(r) +
                    " exceed MPI's int counts (fewer --micro-batches per rank)");
      g.counts[static_cast<std::size_t>(r)] = static_cast<int>(c);
      g.offsets[static_cast<std::size_t>(r)] = static_cast<int>(offset);
      offset += c;
    }
    GSQ_CHECK(static_cast<std::int64_t>(local.size()) == counts[static_cast<std::size_t>(rank_)] &&
                  static_cast<std::int64_t>(all.size()) == offset,
              ErrorCode::kShapeMismatch, "MpiReducer::start_allgather: buffer sizes do not match the counts");
    timed("MPI_Iallgatherv", [&] {
      return MPI_Iallgatherv(local.data(), static_cast<int>(local.size()), MPI_FLOAT, all.data(),
                             g.counts.data(), g.offsets.data(), MPI_FLOAT, comm_, &g.request);
    });
    bytes_ += static_cast<std::int64_t>(sizeof(float)) * offset;
  }

  void progress() override {
    if (pending_.empty()) return;
    int flag = 0;
    timed("MPI_Testall", [&] {
      collect_requests();
      const int rc = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE);
      if (flag != 0) pending_.clear();  // all complete: MPI freed the requests
      return rc;
    });
  }

  void wait_all() override {
    timed("MPI_Waitall", [&] {
      collect_requests();
      const int rc = MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
      pending_.clear();
      return rc;
    });
  }

  /// Seconds spent inside MPI calls and bytes received (every rank's buffers), since construction.
  double seconds() const noexcept { return seconds_; }
  std::int64_t bytes() const noexcept { return bytes_; }

 private:
  /// One started gather: its request and the int arrays MPI reads until it completes.
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<int> counts, offsets;
  };

  /// requests_ ← the pending gathers' requests, the contiguous array MPI_Testall/Waitall take.
  void collect_requests() {
    requests_.clear();
    for (const Pending& g : pending_) requests_.push_back(g.request);
  }

  template <class Call>
  void timed(const char* what, Call call) {
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = call();
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    GSQ_CHECK(rc == MPI_SUCCESS, ErrorCode::kInvalidArgument,
              std::string("MpiReducer: ") + what + " failed with code " + std::to_string(rc));
  }

  MPI_Comm comm_;
  std::deque<Pending> pending_;  // deque: started requests' arrays never move
  std::vector<MPI_Request> requests_;
  int ranks_ = 1;
  int rank_ = 0;
  double seconds_ = 0.0;
  std::int64_t bytes_ = 0;
};

/// This process's rank in MPI_COMM_WORLD (0 before MPI_Init).
inline int world_rank() noexcept {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (initialised == 0) return 0;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

/// Prints `message` as rank r's and stops every rank of the job (MPI_Abort, status 1).
[[noreturn]] inline void abort_all(const std::string& message, int status = 1) {
  std::fflush(stdout);
  std::fprintf(stderr, "rank %d: %s\n", world_rank(), message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, status);
  std::_Exit(status);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace dist
GSQ_NAMESPACE_END
