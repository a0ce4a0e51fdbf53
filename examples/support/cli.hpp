// examples/support/cli.hpp — what every gsq driver does with its command line.
//
// Drivers parse flags with CLI11, then turn the strings into gsq values (Bits::parse,
// target-module lists, base formats) so that every bad value is reported the same way:
// gsq's ConfigError text ("[gsq.config.401] ...") on stderr and exit status 2. Files
// that cannot be read exit 1 with gsq's IoError (file and byte offset); --help exits 0.
// `run_driver` is the one place that maps exceptions to exit statuses, so no driver can
// end in an uncaught exception or a crash because of its input, and every message on
// stderr carries a gsq error id (allocation and filesystem failures included).
#pragma once

#include <CLI/CLI.hpp>
#include <gsq/core/error.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/nn/bits.hpp>
#include <gsq/nn/frozen_weight.hpp>
#include <gsq/quant/gse.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace driver {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // a file, the data or training failed
inline constexpr int kExitUsage = 2;    // bad flags or flag values

/// Throws gsq's ConfigError (kInvalidArgument) with `message`.
[[noreturn]] inline void config_error(const std::string& message) {
  gsq::detail::throw_error(gsq::ErrorCode::kInvalidArgument, message);
}

/// What the driver is doing now, for an allocation failure's message ("building the
/// training model (about 1.2 GiB)"). Set with an Activity for the span of the work.
inline std::string& current_activity() {
  static std::string activity;
  return activity;
}

/// The innermost activity an exception left (kept while the stack unwinds to run_driver).
inline std::string& failed_activity() {
  static std::string activity;
  return activity;
}

class Activity {
 public:
  explicit Activity(std::string what)
      : previous_(std::move(current_activity())), exceptions_(std::uncaught_exceptions()) {
    current_activity() = std::move(what);
  }
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;
  ~Activity() {
    if (std::uncaught_exceptions() > exceptions_ && failed_activity().empty()) failed_activity() = current_activity();
    current_activity() = std::move(previous_);
  }

 private:
  std::string previous_;
  int exceptions_;
};

/// Parses argv into `app`, then runs `body`; returns the process exit status. Every
/// error leaves with a gsq code: allocation failures become kOutOfMemory naming the
/// activity, filesystem errors kOpenFailed naming the path.
template <class Body>
int run_driver(const char* program, CLI::App& app, int argc, char** argv, Body&& body) {
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      config_error(std::string(e.what()) + " (run " + program + " --help for the flags)");
    }
    return body();
  } catch (const gsq::ConfigError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return e.code() == gsq::ErrorCode::kOutOfMemory ? kExitFailure : kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    const std::string what = !failed_activity().empty()    ? failed_activity()
                             : !current_activity().empty() ? current_activity()
                                                           : std::string("running");
    std::fprintf(stderr, "%s: %s\n", program,
                 gsq::Error(gsq::ErrorCode::kOutOfMemory,
                            "out of memory while " + what + "; lower --batch or --seq-len, or use a machine "
                                                            "with more memory")
                     .what());
    return kExitFailure;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fflush(stdout);
    std::string where = e.path1().string();
    if (!e.path2().empty()) where += " -> " + e.path2().string();
    std::fprintf(stderr, "%s: %s\n", program,
                 gsq::Error(gsq::ErrorCode::kOpenFailed, where + ": " + e.code().message()).what());
    return kExitFailure;
  } catch (const gsq::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: unexpected error: %s\n", program, e.what());
    return kExitFailure;
  }
}

/// The precision flag: "fp32" or GSQ-Tuning's W·A·G widths, with --group as G.
inline gsq::Bits parse_precision(const std::string& text, int group) {
  gsq::Bits b = gsq::Bits::parse(text);
  if (b.is_fp32()) return b;
  if (group != 32 && text.find('/') == std::string::npos) b.group = group;
  if (group < 1 || group > 4096)
    config_error("--group must be in 1..4096, got " + std::to_string(group));
  try {
    b.validate();
  } catch (const gsq::Error& e) {
    config_error("--precision " + text + " --group " + std::to_string(group) + ": " + e.what());
  }
  return b;
}

/// What an integer run does beyond its linear layers, parsed from --attention-precision
/// and --classifier-precision (no effect in an FP32 run).
struct IntegerScope {
  std::optional<gsq::Bits> attention_bits = gsq::Bits::fp32();  // empty: as --precision
  bool attention_bf16 = false;       // FP32 attention with BF16 product operands
  bool integer_classifier = false;   // logits and dh through the GSE-INT GEMM
  bool classifier_bf16 = false;      // logits and dh with BF16 operands, FP32 accumulation
};

/// --attention-precision fp32|bf16|same|w<b>a<b>g<b> and --classifier-precision
/// fp32|bf16|same (--int-classifier is the older spelling of `same`).
inline IntegerScope parse_integer_scope(const std::string& attention, const std::string& classifier,
                                        bool int_classifier, int group) {
  IntegerScope scope;
  if (attention == "same") {
    scope.attention_bits.reset();
  } else if (attention == "bf16") {
    scope.attention_bf16 = true;
  } else {
    try {
      scope.attention_bits = parse_precision(attention, group);
    } catch (const gsq::Error& e) {
      config_error("--attention-precision: expected fp32, bf16, same or w<b>a<b>g<b>; " + std::string(e.what()));
    }
  }
  if (classifier != "fp32" && classifier != "bf16" && classifier != "same")
    config_error("--classifier-precision: expected fp32, bf16 or same, got '" + classifier + "'");
  if (int_classifier && classifier == "bf16")
    config_error("--int-classifier and --classifier-precision bf16 contradict each other");
  scope.integer_classifier = int_classifier || classifier == "same";
  scope.classifier_bf16 = classifier == "bf16";
  return scope;
}

/// --grad-rounding: nearest (round half to even) or stochastic.
inline gsq::Rounding parse_gradient_rounding(const std::string& text) {
  if (text == "nearest") return gsq::Rounding::kNearestEven;
  if (text == "stochastic") return gsq::Rounding::kStochastic;
  config_error("--grad-rounding: expected nearest or stochastic, got '" + text + "'");
}

/// "q,k,v,o,gate,up,down" (short or PEFT names), "all", "attn" or "mlp" → PEFT names.
inline std::vector<std::string> parse_targets(const std::string& text) {
  std::vector<std::string> out;
  auto add = [&](std::string_view name) {
    for (const std::string& s : out)
      if (s == name) return;
    out.emplace_back(name);
  };
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    start = end + 1;
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    if (item == "all") {
      for (std::string_view p : gsq::kLlamaProjections) add(p);
      continue;
    }
    if (item == "attn") {
      for (std::string_view p : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(p);
      continue;
    }
    if (item == "mlp") {
      for (std::string_view p : {"gate_proj", "up_proj", "down_proj"}) add(p);
      continue;
    }
    const std::string full = item.ends_with("_proj") ? item : item + "_proj";
    bool known = false;
    for (std::string_view p : gsq::kLlamaProjections) known = known || p == full;
    if (!known)
      config_error("--targets: unknown projection '" + item +
                   "' (use q,k,v,o,gate,up,down, their *_proj names, all, attn or mlp)");
    add(full);
  }
  if (out.empty()) config_error("--targets: no projection named in '" + text + "'");
  return out;
}

inline std::string join(const std::vector<std::string>& items, std::string_view sep = ",") {
  std::string s;
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? std::string(sep) : "") + items[i];
  return s;
}

/// "auto" (FP32 for an FP32 run, NF4 otherwise — GSQ-Tuning's setting), "fp32", "nf4",
/// "gse" → the storage of the frozen base weights.
inline gsq::WeightFormat parse_base_format(const std::string& text, const gsq::Bits& bits) {
  if (text == "auto") return bits.is_fp32() ? gsq::WeightFormat::kFp32 : gsq::WeightFormat::kNf4;
  if (text == "fp32") return gsq::WeightFormat::kFp32;
  if (text == "nf4") return gsq::WeightFormat::kNf4;
  if (text == "gse") return gsq::WeightFormat::kGse;
  config_error("--base: expected auto, fp32, nf4 or gse, got '" + text + "'");
}

/// The flags that set an integer run's scope beyond the linear layers (gsq-finetune,
/// gsq-sweep and gsq-eval share them, so an adapter is evaluated with the forward it was
/// trained with); parse_integer_scope reads them.
inline void add_integer_scope_flags(CLI::App& app, std::string& attention_precision,
                                    std::string& classifier_precision, bool& int_classifier) {
  app.add_option("--attention-precision", attention_precision,
                 "integer runs: attention's score and value products: fp32, bf16 (BF16 operands, FP32 "
                 "accumulation and softmax), same (as --precision) or w<b>a<b>g<b>")
      ->capture_default_str();
  app.add_option("--classifier-precision", classifier_precision,
                 "integer runs: the frozen output classifier (logits and their input gradient): fp32, bf16 "
                 "(BF16 operands, FP32 accumulation and loss) or same (GSE-INT as --precision)")
      ->capture_default_str();
  app.add_flag("--int-classifier", int_classifier, "the same as --classifier-precision same");
}

/// Throws ConfigError unless `path` exists; `flag` names the flag in the message.
inline void require_path(const std::string& path, const char* flag) {
  std::error_code ec;
  if (path.empty()) config_error(std::string(flag) + " is required");
  if (!std::filesystem::exists(path, ec))
    config_error(std::string(flag) + ": '" + path + "' does not exist");
}

/// The shared data directory: $GSQ_DATA_DIR, else the one the build was configured with.
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("GSQ_DATA_DIR"); env != nullptr && *env != '\0') return env;
#ifdef GSQ_DATA_DIR
  return GSQ_DATA_DIR;
#else
  return "../shared/data";
#endif
}

}  // namespace driver
