// examples/support/data.hpp — the drivers' data files: instruction JSON or plain text.
//
// --data and --eval-data take either an Alpaca / LLM-Adapters JSON array (loss on the
// response only) or any other file as plain text (loss on every token). The kind is
// decided from the content (a JSON array starts with '['), never from the file name, and
// reported back so the log says what was trained on. Evaluation sets are cut into
// batches once, in file order, so every evaluation of a run sees the same tokens.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/io/tokenizer.hpp>
#include <gsq/model/trainer.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace driver {

enum class DataKind { kInstruction, kText };

inline const char* data_kind_name(DataKind k) {
  return k == DataKind::kInstruction ? "instruction" : "text";
}

/// Instruction JSON if the first non-blank byte is '[', plain text otherwise.
inline DataKind detect_data_kind(const std::filesystem::path& path) {
  const std::string head = gsq::data::read_text_file(path).substr(0, 4096);
  for (char c : head) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '[' ? DataKind::kInstruction : DataKind::kText;
  }
  return DataKind::kText;
}

struct Dataset {
  DataKind kind = DataKind::kText;
  std::vector<gsq::data::Example> examples;
  std::int64_t items = 0;    // instruction items or text windows before filtering
  std::int64_t dropped = 0;  // instruction items whose response did not fit
  std::int64_t counted_tokens() const {
    std::int64_t n = 0;
    for (const auto& e : examples) n += e.counted();
    return n;
  }
};

/// Examples of at most seq_len + 1 tokens (a batch row of seq_len positions). At most
/// `limit` items are read when limit > 0.
inline Dataset load_dataset(const std::filesystem::path& path, const gsq::Tokenizer& tok,
                            std::int64_t seq_len, std::int64_t limit = 0) {
  Dataset d;
  d.kind = detect_data_kind(path);
  if (d.kind == DataKind::kInstruction) {
    std::vector<gsq::data::InstructionItem> items = gsq::data::load_instruction_items(path);
    if (limit > 0 && static_cast<std::int64_t>(items.size()) > limit)
      items.resize(static_cast<std::size_t>(limit));
    d.items = static_cast<std::int64_t>(items.size());
    d.examples = gsq::data::instruction_examples(items, tok, seq_len + 1);
    d.dropped = d.items - static_cast<std::int64_t>(d.examples.size());
  } else {
    d.examples = gsq::data::text_examples(gsq::data::read_text_file(path), tok, seq_len);
    if (limit > 0 && static_cast<std::int64_t>(d.examples.size()) > limit)
      d.examples.resize(static_cast<std::size_t>(limit));
    d.items = static_cast<std::int64_t>(d.examples.size());
  }
  if (d.examples.empty())
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                std::string("no usable ") + data_kind_name(d.kind) +
                                    " examples (empty, or every response is cut off by --seq-len " +
                                    std::to_string(seq_len) + ")",
                                path.string(), -1);
  return d;
}

/// The examples in order, `batch` per batch, each padded to seq_len (evaluation trims).
inline std::vector<gsq::data::Batch> eval_batches(const std::vector<gsq::data::Example>& examples,
                                                  std::int64_t batch, std::int64_t seq_len) {
  std::vector<gsq::data::Batch> out;
  for (std::size_t i = 0; i < examples.size(); i += static_cast<std::size_t>(batch)) {
    std::vector<const gsq::data::Example*> rows;
    for (std::size_t j = i; j < std::min(examples.size(), i + static_cast<std::size_t>(batch)); ++j)
      rows.push_back(&examples[j]);
    out.push_back(gsq::data::make_batch(rows, seq_len));
  }
  return out;
}

}  // namespace driver
