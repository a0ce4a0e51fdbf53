// examples/support/signals.hpp — Ctrl-C ends a training run cleanly instead of killing it.
//
// The first SIGINT or SIGTERM only sets a flag: the driver finishes the step it is in,
// writes a checkpoint and exits, so no half-written file and no lost work remain. The
// handler is installed with SA_RESETHAND, so a second Ctrl-C kills the process at once
// (for a user who really means it). Only async-signal-safe work happens in the handler.
// SIGXFSZ (a file-size limit, `ulimit -f`) is ignored so that hitting the limit fails the
// write like a full disk does — an error the driver reports — instead of killing it.
#pragma once

#include <signal.h>

#include <atomic>

namespace driver {

namespace detail {
inline std::atomic<int>& stop_signal() noexcept {
  static std::atomic<int> sig{0};
  return sig;
}
inline void on_stop_signal(int sig) { stop_signal().store(sig, std::memory_order_relaxed); }
}  // namespace detail

/// Installs the handlers for SIGINT and SIGTERM (and ignores SIGXFSZ).
inline void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = detail::on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGXFSZ, SIG_IGN);
}

/// The signal that asked to stop, or 0.
inline int stop_requested() noexcept { return detail::stop_signal().load(std::memory_order_relaxed); }

}  // namespace driver
