// examples/support/progress.hpp — how a driver shows a long run: a live line or log lines.
//
// On a terminal, one line is rewritten in place after every step (step, loss, tokens/s,
// ETA, peak memory from gsq's accounting); anywhere else (a pipe, a CI log, a file) a
// plain line is printed every `every` steps and at the last step, so logs stay readable
// and greppable. Messages printed between updates (evaluations, checkpoints) first end
// the live line.
#pragma once

#include <gsq/core/memory.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>

namespace driver {

/// "1.2 MiB"-style text for a byte count.
inline std::string format_bytes(std::int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (std::int64_t{1} << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1 << 30));
  else if (bytes >= (1 << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1 << 20));
  else if (bytes >= (1 << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1 << 10));
  else std::snprintf(buf, sizeof buf, "%" PRId64 " B", bytes);
  return buf;
}

/// The process's peak resident set so far (getrusage; Linux reports KiB), 0 if unknown.
inline std::int64_t peak_rss_bytes() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;
}

/// "1h02m", "3m07s", "12s".
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0.0) || seconds > 1e7) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

/// `text` with every byte that is not part of valid UTF-8 replaced by '?' (generated
/// samples can end inside a multi-byte character or contain stray byte tokens).
inline std::string valid_utf8(const std::string& text) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    const std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= text.size();
    for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(text[i + k]) >> 6) == 0x2;
    if (ok) {
      out.append(text, i, len);
      i += len;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

inline bool stdout_is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

class ProgressLine {
 public:
  /// `total` steps; plain lines every `every` steps when not on a terminal.
  ProgressLine(std::int64_t total, std::int64_t every, bool live = stdout_is_terminal())
      : total_(total), every_(every < 1 ? 1 : every), live_(live) {}

  /// After step `step` (1-based) of `total`: loss, processing rate, and elapsed seconds
  /// of this run so far (for the ETA; steps done before a resume are not timed).
  void update(std::int64_t step, double loss, float lr, double tokens_per_s, double eta_seconds) {
    const std::int64_t peak = gsq::memory_usage().total_peak;
    char line[256];
    std::snprintf(line, sizeof line,
                  "step %*" PRId64 "/%" PRId64 "  loss %.4f  lr %.2e  %8.0f tok/s  ETA %-7s  peak %s",
                  width(), step, total_, loss, static_cast<double>(lr), tokens_per_s,
                  format_duration(eta_seconds).c_str(), format_bytes(peak).c_str());
    if (live_) {
      std::printf("\r%s\033[K", line);
      std::fflush(stdout);
      open_ = true;
    } else if (step % every_ == 0 || step == total_ || step == 1) {
      std::printf("%s\n", line);
      std::fflush(stdout);
    }
  }

  /// Prints a message on its own line (ending a live line first).
  template <class... Args>
  void message(const char* format, Args... args) {
    finish();
    std::printf(format, args...);
    std::printf("\n");
    std::fflush(stdout);
  }

  /// Ends the live line, if one is open.
  void finish() {
    if (open_) {
      std::printf("\n");
      std::fflush(stdout);
      open_ = false;
    }
  }

 private:
  int width() const {
    int w = 1;
    for (std::int64_t t = total_; t >= 10; t /= 10) ++w;
    return w;
  }

  std::int64_t total_;
  std::int64_t every_;
  bool live_;
  bool open_ = false;
};

}  // namespace driver
