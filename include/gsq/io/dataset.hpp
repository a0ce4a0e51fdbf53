// gsq/io/dataset.hpp — training examples from instruction JSON, JSON Lines or plain text, and batches.
//
// An Example is a token sequence plus, for every position t ≥ 1, whether predicting
// ids[t] counts in the loss. Instruction data (Alpaca / LLM-Adapters JSON) counts only the
// response; plain text counts everything. Batches are [batch, seq_len] windows with
// targets shifted by one, padded and masked; the order of examples is a seeded
// permutation per epoch and the sampler's cursor (epoch, position) is all a checkpoint
// needs to resume exactly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/tokenizer.hpp"

GSQ_NAMESPACE_BEGIN
namespace data {

struct Example {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> loss_mask;  // loss_mask[t] = 1: predicting ids[t] from ids[<t] counts
  std::int64_t counted() const {
    return std::count(loss_mask.begin(), loss_mask.end(), std::uint8_t{1});
  }
};

/// One instruction item, as Alpaca and LLM-Adapters store them.
struct InstructionItem {
  std::string instruction;
  std::string input;   // may be empty
  std::string output;
  std::string answer;  // commonsense sets: the label to compare against; empty otherwise
};

/// The usual Alpaca prompt (everything before the response).
inline std::string alpaca_prompt(const InstructionItem& item) {
  if (item.input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\n" +
           item.instruction + "\n\n### Response:\n";
  return "Below is an instruction that describes a task, paired with an input that provides "
         "further context. Write a response that appropriately completes the request.\n\n"
         "### Instruction:\n" +
         item.instruction + "\n\n### Input:\n" + item.input + "\n\n### Response:\n";
}

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::throw_io_error(ErrorCode::kOpenFailed, "cannot open for reading", path.string(), -1);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Reads a JSON array of {"instruction", "input", "output"[, "answer"]} objects.
inline std::vector<InstructionItem> load_instruction_items(const std::filesystem::path& path) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    detail::throw_io_error(ErrorCode::kCorrupt, std::string("not valid JSON: ") + e.what(),
                           path.string(), static_cast<std::int64_t>(e.byte));
  }
  if (!doc.is_array())
    detail::throw_io_error(ErrorCode::kCorrupt, "expected a JSON array of instruction objects",
                           path.string(), 0);
  std::vector<InstructionItem> items;
  items.reserve(doc.size());
  for (std::size_t i = 0; i < doc.size(); ++i) {
    const auto& o = doc[i];
    auto field = [&](const char* key, bool required) -> std::string {
      if (o.is_object() && o.contains(key) && o[key].is_string()) return o[key].get<std::string>();
      if (required)
        detail::throw_io_error(ErrorCode::kCorrupt,
                               "item " + std::to_string(i) + " lacks string field '" + key + "'",
                               path.string(), -1);
      return {};
    };
    items.push_back({field("instruction", true), field("input", false), field("output", true),
                     field("answer", false)});
  }
  return items;
}

/// The records of a JSON Lines file: one JSON object per line (blank lines skipped),
/// either every one an instruction item {"instruction", "input"?, "output", "answer"?}
/// (loss on the response) or every one a text record {"text"} (loss on every token).
/// Mixing the two, or any line that is not such an object, is an IoError naming the line.
struct JsonLines {
  std::vector<InstructionItem> items;  // instruction records, in file order
  std::vector<std::string> texts;      // text records, in file order
  bool is_instruction() const noexcept { return !items.empty(); }
};

inline JsonLines parse_json_lines(const std::string& content, const std::string& file) {
  JsonLines out;
  std::size_t start = 0, line_no = 0;
  while (start < content.size()) {
    std::size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    const std::string line = content.substr(start, end - start);
    const std::size_t offset = start;
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(line_no) + ": ";
    nlohmann::json o;
    try {
      o = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      detail::throw_io_error(ErrorCode::kCorrupt, where + "not valid JSON: " + e.what(), file,
                             static_cast<std::int64_t>(offset));
    }
    if (!o.is_object())
      detail::throw_io_error(ErrorCode::kCorrupt, where + "expected a JSON object per line", file,
                             static_cast<std::int64_t>(offset));
    auto str = [&](const char* key, bool required) -> std::string {
      if (o.contains(key) && o[key].is_string()) return o[key].get<std::string>();
      if (required || o.contains(key))
        detail::throw_io_error(ErrorCode::kCorrupt, where + "lacks string field '" + key + "'", file,
                               static_cast<std::int64_t>(offset));
      return {};
    };
    const bool instruction = o.contains("instruction") || o.contains("output");
    if (instruction ? !out.texts.empty() : !out.items.empty())
      detail::throw_io_error(ErrorCode::kCorrupt,
                             where + "mixes instruction records and text records in one file", file,
                             static_cast<std::int64_t>(offset));
    if (instruction) {
      out.items.push_back({str("instruction", true), str("input", false), str("output", true), str("answer", false)});
    } else if (o.contains("text")) {
      out.texts.push_back(str("text", true));
    } else {
      detail::throw_io_error(ErrorCode::kCorrupt,
                             where + "expected an instruction record (\"instruction\", \"output\") or a "
                                     "text record (\"text\")",
                             file, static_cast<std::int64_t>(offset));
    }
  }
  if (out.items.empty() && out.texts.empty())
    detail::throw_io_error(ErrorCode::kCorrupt, "no JSON Lines records", file, -1);
  return out;
}

/// Prompt + response tokens, loss on the response (and its EOS) only, cut to
/// max_tokens. Returns an example with no counted token if the prompt fills the window.
inline Example make_instruction_example(const InstructionItem& item, const Tokenizer& tok,
                                        std::int64_t max_tokens) {
  Example ex;
  ex.ids = tok.encode(alpaca_prompt(item), /*bos=*/true, /*eos=*/false);
  ex.loss_mask.assign(ex.ids.size(), 0);
  const std::vector<std::int32_t> response = tok.encode(item.output, /*bos=*/false, /*eos=*/true);
  ex.ids.insert(ex.ids.end(), response.begin(), response.end());
  ex.loss_mask.resize(ex.ids.size(), 1);
  if (static_cast<std::int64_t>(ex.ids.size()) > max_tokens) {
    ex.ids.resize(static_cast<std::size_t>(max_tokens));
    ex.loss_mask.resize(static_cast<std::size_t>(max_tokens));
  }
  return ex;
}

/// Instruction examples for training: items whose response does not fit are dropped.
inline std::vector<Example> instruction_examples(const std::vector<InstructionItem>& items,
                                                 const Tokenizer& tok, std::int64_t max_tokens) {
  std::vector<Example> out;
  for (const auto& item : items) {
    Example ex = make_instruction_example(item, tok, max_tokens);
    if (ex.counted() > 0) out.push_back(std::move(ex));
  }
  return out;
}

/// Plain text cut into windows of `window + 1` tokens (overlapping by one, so every token
/// after the first is predicted exactly once); every position counts.
inline std::vector<Example> text_examples(const std::string& text, const Tokenizer& tok,
                                          std::int64_t window) {
  GSQ_CHECK(window >= 1, ErrorCode::kInvalidArgument, "text_examples: window must be >= 1");
  const std::vector<std::int32_t> ids = tok.encode(text, /*bos=*/true, /*eos=*/false);
  std::vector<Example> out;
  for (std::size_t start = 0; start + 1 < ids.size(); start += static_cast<std::size_t>(window)) {
    const std::size_t end = std::min(ids.size(), start + static_cast<std::size_t>(window) + 1);
    Example ex;
    ex.ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(start),
                  ids.begin() + static_cast<std::ptrdiff_t>(end));
    ex.loss_mask.assign(ex.ids.size(), 1);
    ex.loss_mask[0] = 0;
    out.push_back(std::move(ex));
  }
  return out;
}

/// A batch of `rows` sequences of length `seq_len`: inputs[r, t] predicts targets[r, t],
/// which counts where mask[r, t] = 1. Padding has input 0, target 0 and mask 0.
struct Batch {
  std::int64_t rows = 0;
  std::int64_t seq_len = 0;
  std::vector<std::int32_t> inputs;
  std::vector<std::int32_t> targets;
  std::vector<std::uint8_t> mask;
  std::int64_t counted() const { return std::count(mask.begin(), mask.end(), std::uint8_t{1}); }
};

inline Batch make_batch(const std::vector<const Example*>& examples, std::int64_t seq_len) {
  Batch b;
  b.rows = static_cast<std::int64_t>(examples.size());
  b.seq_len = seq_len;
  const auto n = static_cast<std::size_t>(b.rows * seq_len);
  b.inputs.assign(n, 0);
  b.targets.assign(n, 0);
  b.mask.assign(n, 0);
  for (std::int64_t r = 0; r < b.rows; ++r) {
    const Example& ex = *examples[static_cast<std::size_t>(r)];
    const std::int64_t len = std::min<std::int64_t>(seq_len, static_cast<std::int64_t>(ex.ids.size()) - 1);
    for (std::int64_t t = 0; t < len; ++t) {
      const auto i = static_cast<std::size_t>(r * seq_len + t);
      b.inputs[i] = ex.ids[static_cast<std::size_t>(t)];
      b.targets[i] = ex.ids[static_cast<std::size_t>(t + 1)];
      b.mask[i] = ex.loss_mask[static_cast<std::size_t>(t + 1)];
    }
  }
  return b;
}

/// Visits examples in a seeded permutation per epoch. The cursor (epoch, position) is
/// the sampler's whole state.
class BatchSampler {
 public:
  struct Cursor {
    std::uint64_t epoch = 0;
    std::uint64_t position = 0;
  };

  BatchSampler(const std::vector<Example>& examples, std::int64_t batch, std::int64_t seq_len,
               std::uint64_t seed)
      : examples_(&examples), batch_(batch), seq_len_(seq_len), seed_(seed) {
    GSQ_CHECK(!examples.empty(), ErrorCode::kInvalidArgument,
              "BatchSampler: no training examples (all too long or the data is empty)");
    GSQ_CHECK(batch >= 1 && seq_len >= 1, ErrorCode::kInvalidArgument,
              "BatchSampler: batch and seq_len must be >= 1");
    shuffle();
  }

  Batch next() {
    std::vector<const Example*> picked;
    for (std::int64_t i = 0; i < batch_; ++i) {
      if (cursor_.position == order_.size()) {
        ++cursor_.epoch;
        cursor_.position = 0;
        shuffle();
      }
      picked.push_back(&(*examples_)[order_[cursor_.position++]]);
    }
    return make_batch(picked, seq_len_);
  }

  Cursor cursor() const noexcept { return cursor_; }
  void seek(Cursor c) {
    GSQ_CHECK(c.position <= examples_->size(), ErrorCode::kInvalidArgument,
              "BatchSampler::seek: position " + std::to_string(c.position) + " beyond " +
                  std::to_string(examples_->size()) + " examples");
    cursor_ = c;
    shuffle();
  }

 private:
  void shuffle() {
    order_.resize(examples_->size());
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    CounterRng rng(seed_, 0x5348554646ull + cursor_.epoch);  // "SHUFF" + epoch
    for (std::size_t i = order_.size(); i > 1; --i)
      std::swap(order_[i - 1], order_[rng.next_u32() % i]);
  }

  const std::vector<Example>* examples_;
  std::int64_t batch_;
  std::int64_t seq_len_;
  std::uint64_t seed_;
  Cursor cursor_{};
  std::vector<std::size_t> order_;
};

}  // namespace data
GSQ_NAMESPACE_END
