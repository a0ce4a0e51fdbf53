// examples/support/data.hpp — the drivers' data files: instruction JSON, JSON Lines or plain text.
//
// --data and --eval-data take an Alpaca / LLM-Adapters JSON array (loss on the response
// only), JSON Lines (instruction records, or {"text": ...} records), or plain text (loss
// on every token). --data-format names the format; "auto" decides from the content only
// when that is unambiguous (a JSON array, JSON Lines, or text that does not start like
// JSON) and otherwise stops with an error naming the choices — a JSON object is never
// trained on as plain text. The format is reported back so the log says what was read. Evaluation sets are cut into
// batches once, in file order, so every evaluation of a run sees the same tokens.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/io/tokenizer.hpp>
#include <gsq/model/trainer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "support/cli.hpp"

namespace driver {

enum class DataKind { kInstruction, kText };

inline const char* data_kind_name(DataKind k) {
  return k == DataKind::kInstruction ? "instruction" : "text";
}

/// --data-format: how the file is read. kAuto decides from content only when that is
/// unambiguous (see detect_data_format).
enum class DataFormat { kAuto, kAlpaca, kText, kJsonl };

inline DataFormat parse_data_format(const std::string& text) {
  if (text == "auto") return DataFormat::kAuto;
  if (text == "alpaca") return DataFormat::kAlpaca;
  if (text == "text") return DataFormat::kText;
  if (text == "jsonl") return DataFormat::kJsonl;
  config_error("--data-format: expected auto, alpaca, text or jsonl, got '" + text + "'");
}

inline const char* data_format_name(DataFormat f) {
  switch (f) {
    case DataFormat::kAlpaca: return "alpaca";
    case DataFormat::kText: return "text";
    case DataFormat::kJsonl: return "jsonl";
    default: return "auto";
  }
}

namespace detail {
inline char first_non_blank(const std::string& s) {
  for (char c : s)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return c;
  return '\0';
}
/// Whether every non-blank line of `content` parses as a JSON object (and there is one).
inline bool is_json_lines(const std::string& content) {
  std::size_t start = 0;
  bool any = false;
  while (start < content.size()) {
    std::size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    const std::string line = content.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!nlohmann::json::accept(line)) return false;
    if (first_non_blank(line) != '{') return false;
    any = true;
  }
  return any;
}
}  // namespace detail

/// The format of `content` (of `path`) when --data-format is auto: a JSON array is alpaca,
/// one JSON object per line is jsonl, text that does not start like JSON is text. Content
/// that starts like JSON but is neither (a single JSON object, broken JSON) is an error
/// naming the choices, never silently trained on as plain text; so is a .json/.jsonl
/// name on content that is not JSON.
inline DataFormat detect_data_format(const std::string& content, const std::filesystem::path& path) {
  const char c = detail::first_non_blank(content);
  const std::string ext = path.extension().string();
  if (c == '[') return DataFormat::kAlpaca;  // load_instruction_items reports broken JSON
  if (c == '{') {
    // One JSON object (even on one line) is ambiguous: a lone record or a mistake.
    if (!nlohmann::json::accept(content) && detail::is_json_lines(content)) return DataFormat::kJsonl;
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                nlohmann::json::accept(content)
                                    ? "a single JSON object is not training data: expected a JSON array of "
                                      "instruction objects (--data-format alpaca) or one JSON object per line "
                                      "(--data-format jsonl; say so if this is a one-record file)"
                                    : "starts like JSON but is neither a JSON array nor JSON Lines; if it is "
                                      "plain text, say --data-format text",
                                path.string(), 0);
  }
  if (ext == ".json" || ext == ".jsonl")
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                "named " + ext + " but not JSON; if it is plain text, say --data-format text",
                                path.string(), 0);
  return DataFormat::kText;
}

/// Throws unless `content` can be read as `format` (explicit --data-format): JSON given as
/// text, or JSON Lines given as alpaca, is an error rather than training on the wrong thing.
inline void check_data_format(DataFormat format, const std::string& content, const std::filesystem::path& path) {
  const char c = detail::first_non_blank(content);
  const bool json_lines = c == '{' && detail::is_json_lines(content);
  const std::string ext = path.extension().string();
  auto fail = [&](const std::string& why) {
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                std::string("--data-format ") + data_format_name(format) + ": " + why, path.string(), 0);
  };
  if (format == DataFormat::kText) {
    if (c == '[' && nlohmann::json::accept(content)) fail("this is a JSON array (use --data-format alpaca)");
    if (c == '{' && nlohmann::json::accept(content)) fail("this is a JSON object, not plain text");
    if (json_lines || ext == ".jsonl") fail("this is JSON Lines (use --data-format jsonl)");
  } else if (format == DataFormat::kAlpaca) {
    if (json_lines || ext == ".jsonl") fail("this is JSON Lines (use --data-format jsonl)");
    if (c != '[') fail("expected a JSON array of instruction objects");
  } else if (format == DataFormat::kJsonl) {
    if (c == '[') fail("this is a JSON array (use --data-format alpaca)");
  }
}

struct Dataset {
  DataKind kind = DataKind::kText;
  DataFormat format = DataFormat::kText;
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
                            std::int64_t seq_len, std::int64_t limit = 0,
                            DataFormat format = DataFormat::kAuto) {
  Dataset d;
  const std::string content = gsq::data::read_text_file(path);
  if (format == DataFormat::kAuto) {
    format = detect_data_format(content, path);
  } else {
    check_data_format(format, content, path);
  }
  d.format = format;
  std::vector<gsq::data::InstructionItem> items;
  std::vector<std::string> texts;
  if (format == DataFormat::kAlpaca) {
    items = gsq::data::load_instruction_items(path);
  } else if (format == DataFormat::kJsonl) {
    gsq::data::JsonLines j = gsq::data::parse_json_lines(content, path.string());
    items = std::move(j.items);
    texts = std::move(j.texts);
  } else {
    texts.push_back(content);
  }
  d.kind = items.empty() ? DataKind::kText : DataKind::kInstruction;
  if (d.kind == DataKind::kInstruction) {
    if (limit > 0 && static_cast<std::int64_t>(items.size()) > limit)
      items.resize(static_cast<std::size_t>(limit));
    d.items = static_cast<std::int64_t>(items.size());
    d.examples = gsq::data::instruction_examples(items, tok, seq_len + 1);
    d.dropped = d.items - static_cast<std::int64_t>(d.examples.size());
  } else {
    for (const std::string& t : texts) {
      std::vector<gsq::data::Example> ex = gsq::data::text_examples(t, tok, seq_len);
      for (auto& e : ex) d.examples.push_back(std::move(e));
      if (limit > 0 && static_cast<std::int64_t>(d.examples.size()) >= limit) break;
    }
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
