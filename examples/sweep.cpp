// gsq-sweep: GSQ-Tuning's Pareto study — precision × LoRA rank against memory.
//
//   gsq-sweep --model stories260K.bin --data alpaca_train.json --eval-data alpaca_dev.json
//             --steps 200 --out runs/sweep
//
// Fine-tunes one model per (precision, rank) pair — default {fp32, w8a8g8, w6a6g6, w5a5g5,
// w4a8g8} × {4, 8, 16, 32} — with identical data, seed and schedule, and records for each:
// held-out quality (the forward it was trained with, and an FP32 forward of the same
// adapters), the peak memory gsq's accounting measured while training (peaks reset per
// run; what was held before the run's model was built is not counted), time and
// throughput. Writes into --out:
//   sweep.csv    one row per run; `pareto` = 1 where no other run has both lower (or
//                equal) memory and lower (or equal) held-out loss
//   pareto.svg   held-out perplexity versus peak training memory, frontier drawn
//   pareto.png   the same through gnuplot, when gnuplot is installed (else said so)
//   runs/<precision>_r<rank>/log.jsonl   each run's step log
#include <gsq/core/memory.hpp>
#include <gsq/core/parallel.hpp>
#include <gsq/io/atomic_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/cli.hpp"
#include "support/data.hpp"
#include "support/finetune.hpp"
#include "support/jsonl.hpp"
#include "support/model.hpp"
#include "support/progress.hpp"
#include "support/signals.hpp"
#include "support/svg.hpp"

namespace {

namespace fs = std::filesystem;

struct Options {
  driver::FinetuneSettings run;
  std::vector<std::string> precisions = {"fp32", "w8a8g8", "w6a6g6", "w5a5g5", "w4a8g8"};
  std::vector<std::int64_t> ranks = {4, 8, 16, 32};
  bool no_png = false;
};

struct Row {
  std::string precision;
  std::int64_t rank = 0;
  std::string base;
  driver::FinetuneResult result;
  bool pareto = false;
  double quality() const { return result.eval ? result.eval->mean_nll() : result.final_loss; }
};

/// Marks the rows no other row dominates in (peak memory, held-out loss), both minimised.
void mark_pareto(std::vector<Row>& rows) {
  for (Row& a : rows) {
    a.pareto = true;
    for (const Row& b : rows) {
      if (&a == &b) continue;
      const bool no_worse = b.result.peak_bytes <= a.result.peak_bytes && b.quality() <= a.quality();
      const bool better = b.result.peak_bytes < a.result.peak_bytes || b.quality() < a.quality();
      if (no_worse && better) {
        a.pareto = false;
        break;
      }
    }
  }
}

constexpr double kMiB = 1024.0 * 1024.0;

void write_csv(const fs::path& path, const std::vector<Row>& rows) {
  std::ostringstream f;
  f << "precision,rank,base,steps,trainable_params,final_train_loss,eval_nll,eval_ppl,eval_fp32_nll,eval_fp32_ppl,"
       "peak_train_mib,peak_weights_mib,peak_activations_mib,peak_gradients_mib,peak_optimizer_mib,peak_scratch_mib,"
       "weight_mib,train_seconds,tokens_per_s,pareto\n";
  for (const Row& r : rows) {
    const driver::FinetuneResult& x = r.result;
    char buf[1024];
    auto nll = [](const std::optional<gsq::EvalResult>& e) { return e ? e->mean_nll() : std::nan(""); };
    auto ppl = [](const std::optional<gsq::EvalResult>& e) { return e ? e->perplexity() : std::nan(""); };
    std::snprintf(buf, sizeof buf,
                  "%s,%lld,%s,%lld,%lld,%.6f,%.6f,%.4f,%.6f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.3f,%.1f,%d\n",
                  r.precision.c_str(), static_cast<long long>(r.rank), r.base.c_str(),
                  static_cast<long long>(x.steps_done), static_cast<long long>(x.trainable_params), x.final_loss,
                  nll(x.eval), ppl(x.eval), nll(x.eval_fp32), ppl(x.eval_fp32),
                  static_cast<double>(x.peak_bytes) / kMiB,
                  static_cast<double>(x.peak_by_category[0]) / kMiB, static_cast<double>(x.peak_by_category[1]) / kMiB,
                  static_cast<double>(x.peak_by_category[2]) / kMiB, static_cast<double>(x.peak_by_category[3]) / kMiB,
                  static_cast<double>(x.peak_by_category[4]) / kMiB, static_cast<double>(x.weight_bytes) / kMiB,
                  x.seconds, x.tokens_per_second(), r.pareto ? 1 : 0);
    f << buf;
  }
  gsq::write_file_atomically(path, f.str());
}

std::vector<std::pair<double, double>> frontier(const std::vector<Row>& rows, bool perplexity) {
  std::vector<std::pair<double, double>> f;
  for (const Row& r : rows)
    if (r.pareto)
      f.emplace_back(static_cast<double>(r.result.peak_bytes) / kMiB,
                     perplexity && r.result.eval ? r.result.eval->perplexity() : r.quality());
  std::sort(f.begin(), f.end());
  return f;
}

void write_svg(const fs::path& path, const std::vector<Row>& rows, const Options& o, const std::string& model) {
  const bool have_eval = !rows.empty() && rows.front().result.eval.has_value();
  driver::SvgScatter plot("gsq-sweep: " + fs::path(model).filename().string() + ", " + o.run.method + ", " +
                              std::to_string(o.run.steps) + " steps",
                          "peak training memory (MiB, gsq accounting)",
                          have_eval ? "held-out perplexity" : "final training loss");
  plot.set_series_names(o.precisions);
  for (const Row& r : rows) {
    const auto series = std::find(o.precisions.begin(), o.precisions.end(), r.precision) - o.precisions.begin();
    plot.add_point({static_cast<double>(r.result.peak_bytes) / kMiB,
                    have_eval ? r.result.eval->perplexity() : r.result.final_loss,
                    r.precision + " r" + std::to_string(r.rank), static_cast<int>(series), r.pareto});
  }
  plot.add_line(frontier(rows, have_eval), "Pareto frontier");
  plot.write(path);
}

/// Draws the PNG with gnuplot; returns a note saying what happened.
std::string write_png(const fs::path& dir, const std::vector<Row>& rows) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "pareto.png not written: gnuplot is not installed (apt install gnuplot-nox); pareto.svg has the figure";
  const bool have_eval = !rows.empty() && rows.front().result.eval.has_value();
  {
    std::ofstream d(dir / "pareto.dat", std::ios::trunc);
    for (const Row& r : rows)
      d << static_cast<double>(r.result.peak_bytes) / kMiB << ' '
        << (have_eval ? r.result.eval->perplexity() : r.result.final_loss) << ' ' << r.precision << "_r" << r.rank
        << ' ' << (r.pareto ? 1 : 0) << '\n';
    std::ofstream fr(dir / "pareto_frontier.dat", std::ios::trunc);
    for (const auto& [x, y] : frontier(rows, have_eval)) fr << x << ' ' << y << '\n';
    std::ofstream g(dir / "pareto.gp", std::ios::trunc);
    g << "set terminal png size 900,600 noenhanced\nset output '" << (dir / "pareto.png").string() << "'\n"
      << "set xlabel 'peak training memory (MiB)'\nset ylabel '" << (have_eval ? "held-out perplexity" : "final training loss")
      << "'\nset grid\nset key outside bottom center horizontal\nset title 'gsq-sweep: quality vs memory'\n"
      << "plot '" << (dir / "pareto.dat").string() << "' using 1:2 with points pt 7 ps 1.2 title 'runs', \\\n"
      << "     '' using 1:2:3 with labels offset 1,0.7 font ',8' notitle, \\\n"
      << "     '" << (dir / "pareto_frontier.dat").string() << "' using 1:2 with linespoints lw 2 dt 2 pt 6 ps 2 title 'Pareto frontier'\n";
  }
  const std::string cmd = "gnuplot '" + (dir / "pareto.gp").string() + "' 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return "pareto.png not written: gnuplot failed (see pareto.gp)";
  return "";
}

int sweep(Options& o) {
  driver::FinetuneSettings& s = o.run;
  if (o.precisions.empty() || o.ranks.empty()) driver::config_error("--precisions and --ranks need at least one value");
  for (const std::string& p : o.precisions) (void)driver::parse_precision(p, s.group);
  for (std::int64_t r : o.ranks)
    if (r < 1) driver::config_error("--ranks: every rank must be >= 1, got " + std::to_string(r));
  s.precision = o.precisions.front();
  s.rank = o.ranks.front();
  s.validate();
  if (s.out.empty()) driver::config_error("--out is required");
  driver::require_path(s.data, "--data");
  if (!s.eval_data.empty()) driver::require_path(s.eval_data, "--eval-data");
  const fs::path out = s.out;
  fs::create_directories(out / "runs");
  if (s.threads > 0) gsq::set_num_threads(s.threads);

  const driver::BaseModel base = driver::load_base_model(s.model, s.tokenizer);
  if (s.seq_len > base.weights.config.max_seq_len)
    driver::config_error("--seq-len " + std::to_string(s.seq_len) + " exceeds the model's context of " +
                         std::to_string(base.weights.config.max_seq_len));
  const driver::Dataset train = driver::load_dataset(s.data, *base.tokenizer, s.seq_len, s.max_items);
  std::vector<gsq::data::Batch> eval;
  if (!s.eval_data.empty())
    eval = driver::eval_batches(driver::load_dataset(s.eval_data, *base.tokenizer, s.seq_len, s.eval_max).examples,
                                s.batch, s.seq_len);
  std::printf("gsq-sweep: %zu precisions x %zu ranks, %s, %lld steps each, %d threads\n", o.precisions.size(),
              o.ranks.size(), s.method.c_str(), static_cast<long long>(s.steps), gsq::num_threads());
  driver::install_stop_handlers();

  std::vector<Row> rows;
  for (const std::string& precision : o.precisions) {
    for (std::int64_t rank : o.ranks) {
      if (driver::stop_requested() != 0) break;
      driver::FinetuneSettings rs = s;
      rs.precision = precision;
      rs.rank = rank;
      const std::string name = precision + "_r" + std::to_string(rank);
      fs::create_directories(out / "runs" / name);
      driver::JsonlLog log(out / "runs" / name / "log.jsonl", false);
      driver::RunHooks hooks;
      hooks.log = &log;
      hooks.label = "[" + std::to_string(rows.size() + 1) + "/" + std::to_string(o.precisions.size() * o.ranks.size()) +
                    "] " + rs.adapter_spec().describe();
      Row row{precision, rank, std::string(gsq::weight_format_name(rs.adapter_spec().base)),
              driver::run_finetune(rs, base, train, eval, hooks), false};
      if (row.result.interrupted) break;
      std::printf("    held-out %s, peak %s, %s\n",
                  row.result.eval ? ("ppl " + std::to_string(row.result.eval->perplexity())).c_str() : "n/a",
                  driver::format_bytes(row.result.peak_bytes).c_str(),
                  driver::format_duration(row.result.seconds).c_str());
      std::fflush(stdout);
      rows.push_back(std::move(row));
    }
  }
  if (rows.empty()) {
    std::printf("interrupted before the first run finished; nothing written\n");
    return driver::kExitOk;
  }
  mark_pareto(rows);
  write_csv(out / "sweep.csv", rows);
  write_svg(out / "pareto.svg", rows, o, s.model);
  const std::string png = o.no_png ? "pareto.png not written (--no-png)" : write_png(out, rows);

  std::printf("\n%-8s %5s %5s %10s %10s %11s %9s %9s  %s\n", "precision", "rank", "base", "held-out", "fp32-fwd",
              "peak MiB", "time", "tok/s", "pareto");
  for (const Row& r : rows) {
    const auto& x = r.result;
    std::printf("%-9s %5lld %5s %10.4f %10s %11.2f %9s %9.0f  %s\n", r.precision.c_str(), static_cast<long long>(r.rank),
                r.base.c_str(), x.eval ? x.eval->perplexity() : x.final_loss,
                x.eval_fp32 ? std::to_string(x.eval_fp32->perplexity()).substr(0, 8).c_str() : "-",
                static_cast<double>(x.peak_bytes) / kMiB, driver::format_duration(x.seconds).c_str(),
                x.tokens_per_second(), r.pareto ? "*" : "");
  }
  std::printf("\n(held-out: perplexity on --eval-data with the trained forward, else final training loss)\n");
  std::printf("wrote %s, %s%s\n", (out / "sweep.csv").string().c_str(), (out / "pareto.svg").string().c_str(),
              png.empty() ? (", " + (out / "pareto.png").string()).c_str() : "");
  if (!png.empty()) std::printf("%s\n", png.c_str());
  if (rows.size() < o.precisions.size() * o.ranks.size()) std::printf("interrupted: %zu runs done\n", rows.size());
  return driver::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.run.steps = 200;
  o.run.fp32_eval = true;
  CLI::App app{"gsq-sweep: precision x rank grid of fine-tuning runs — quality, memory, time, Pareto frontier"};
  app.set_help_all_flag("--help-all", "show every flag");
  driver::add_model_flags(app, o.run);
  driver::add_training_flags(app, o.run);
  driver::add_adapter_flags(app, o.run, /*with_precision_and_rank=*/false);
  app.add_option("--precisions", o.precisions, "precisions to sweep (fp32 or w<b>a<b>g<b>)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--ranks", o.ranks, "LoRA ranks to sweep")->delimiter(',')->capture_default_str();
  app.add_option("--out", o.run.out, "output directory (sweep.csv, pareto.svg, pareto.png, runs/)")->required();
  app.add_option("--log-every", o.run.log_every, "plain progress line every N steps when not on a terminal")
      ->capture_default_str();
  app.add_flag("--no-png", o.no_png, "do not call gnuplot");
  app.add_flag("!--no-fp32-eval", o.run.fp32_eval, "skip the FP32-forward evaluation of integer runs");
  return driver::run_driver("gsq-sweep", app, argc, argv, [&] { return sweep(o); });
}
