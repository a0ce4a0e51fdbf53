// gsq/io/hf_tokenizer.hpp — a Hugging Face `tokenizer.json` BPE tokenizer, following the
// `tokenizers` library's pipeline for the components LLaMA-family files use.
//
// encode:
//  1. added tokens: the text is split on added tokens with `normalized: false` (matched
//     leftmost-longest in the raw text); every other piece is normalized and then split on
//     the `normalized: true` ones (matched by their normalized content), as `tokenizers`'
//     AddedVocabulary does. lstrip/rstrip/single_word are not implemented.
//  2. normalizer: Sequence / Prepend (only to a non-empty piece) / Replace (string pattern).
//  3. no pre-tokenizer: each piece is one word (merges cross spaces).
//  4. BPE model: characters to ids; a character outside the vocabulary becomes its
//     `<0xHH>` byte tokens when `byte_fallback` and all of them exist, else `<unk>`
//     (consecutive ones fused into one with `fuse_unk`; dropped without an unk token);
//     then merges by rank, lowest first, leftmost on ties (bpe.hpp). `ignore_merges`
//     takes a word that is itself in the vocabulary whole.
//  5. post-processor TemplateProcessing: the special tokens before `$A` are the BOS
//     prefix (added when `bos`), those after it the suffix (added when `eos`, otherwise
//     the EOS id is appended).
// decode: special added tokens are skipped (skip_special_tokens), then the decoder chain:
// Replace, ByteFallback (a run of <0xHH> pieces becomes its bytes if they are valid
// UTF-8, else one U+FFFD per byte), Fuse, Strip; no decoder joins pieces with spaces.
//
// Anything else (other models, normalizers, pre-tokenizers, regex patterns) is refused
// at load with an IoError naming it: a tokenizer that silently produced different ids
// would poison every result downstream. BOS/EOS: from the template, else from a
// `tokenizer_config.json` next to the file, else the usual names (<s>, </s>, ...).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/bpe.hpp"
#include "gsq/io/json.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/tokenizer.hpp"

GSQ_NAMESPACE_BEGIN

class HfBpeTokenizer final : public Tokenizer {
 public:
  /// Parses a tokenizer.json held in `file`; `tokenizer_config`, if given, is the
  /// tokenizer_config.json that names BOS/EOS when the file itself does not.
  static std::unique_ptr<HfBpeTokenizer> parse(const MappedFile& file,
                                               const MappedFile* tokenizer_config = nullptr) {
    auto t = std::unique_ptr<HfBpeTokenizer>(new HfBpeTokenizer());
    t->load(file, tokenizer_config);
    return t;
  }
  /// Reads `path`, and tokenizer_config.json from the same directory if it exists.
  static std::unique_ptr<HfBpeTokenizer> open(const std::filesystem::path& path) {
    const MappedFile file = MappedFile::open(path);
    const std::filesystem::path sidecar = path.parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(sidecar, ec)) {
      const MappedFile config = MappedFile::open(sidecar);
      return parse(file, &config);
    }
    return parse(file, nullptr);
  }

  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const override {
    GSQ_CHECK(text.size() < static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max() / 4),
              ErrorCode::kInvalidArgument, "HfBpeTokenizer::encode: text too long");
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 2 + 4);
    if (bos) {
      GSQ_CHECK(!prefix_.empty() || bos_id_ >= 0, ErrorCode::kInvalidArgument,
                "HfBpeTokenizer::encode: this tokenizer has no BOS token");
      if (prefix_.empty()) {
        ids.push_back(bos_id_);
      } else {
        ids.insert(ids.end(), prefix_.begin(), prefix_.end());
      }
    }
    split_added(text, raw_added_, [&](std::string_view piece, std::int32_t token) {
      if (token >= 0) {
        ids.push_back(token);
        return;
      }
      const std::string normalized = normalize(piece);
      split_added(normalized, normalized_added_, [&](std::string_view word, std::int32_t token2) {
        if (token2 >= 0) {
          ids.push_back(token2);
        } else {
          tokenize_word(word, ids);
        }
      });
    });
    if (eos) {
      GSQ_CHECK(!suffix_.empty() || eos_id_ >= 0, ErrorCode::kInvalidArgument,
                "HfBpeTokenizer::encode: this tokenizer has no EOS token");
      if (suffix_.empty()) {
        ids.push_back(eos_id_);
      } else {
        ids.insert(ids.end(), suffix_.begin(), suffix_.end());
      }
    }
    return ids;
  }

  std::string decode(std::span<const std::int32_t> ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const std::int32_t id : ids) {
      check_id(id);
      if (special_[static_cast<std::size_t>(id)]) continue;
      tokens.push_back(pieces_[static_cast<std::size_t>(id)]);
    }
    if (decoders_.empty()) {
      std::string out;
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        if (i > 0) out += ' ';
        out += tokens[i];
      }
      return out;
    }
    for (const DecoderStep& step : decoders_) apply_decoder(step, tokens);
    std::string out;
    for (const std::string& s : tokens) out += s;
    return out;
  }

  std::int32_t vocab_size() const noexcept override {
    return static_cast<std::int32_t>(pieces_.size());
  }
  std::int32_t bos_id() const noexcept override { return prefix_.empty() ? bos_id_ : prefix_.front(); }
  std::int32_t eos_id() const noexcept override { return suffix_.empty() ? eos_id_ : suffix_.back(); }
  std::string_view piece(std::int32_t id) const override {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }
  std::string_view kind() const noexcept override { return "huggingface-bpe"; }

  std::int32_t unk_id() const noexcept { return unk_id_; }
  std::size_t merge_count() const noexcept { return merges_.size(); }
  bool is_special(std::int32_t id) const {
    check_id(id);
    return special_[static_cast<std::size_t>(id)];
  }

 private:
  struct NormalizerStep {
    bool prepend;         // else: replace
    std::string pattern;  // replace: what
    std::string content;  // prepend: what; replace: with what
  };
  enum class DecoderKind { kReplace, kByteFallback, kFuse, kStrip };
  struct DecoderStep {
    DecoderKind kind;
    std::string pattern, content;  // replace; strip: content is one character
    std::int64_t start = 0, stop = 0;
  };
  struct AddedPattern {
    std::string text;
    std::int32_t id;
  };
  struct Merge {
    std::int32_t rank;
    std::int32_t merged;
  };

  HfBpeTokenizer() = default;

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  std::int32_t vocab_find(std::string_view s) const {
    auto it = vocab_.find(std::string(s));
    return it == vocab_.end() ? -1 : it->second;
  }

  // ---- loading -------------------------------------------------------------------------

  void load(const MappedFile& file, const MappedFile* tokenizer_config) {
    namespace iod = io::detail;
    const std::string& name = file.name();
    const iod::Json j = iod::parse_json(file.bytes(), name, 0);
    const iod::JsonWhere where{name, 0};
    auto unsupported = [&](const std::string& what) {
      detail::throw_io_error(ErrorCode::kCorrupt, "unsupported tokenizer: " + what, name, 0);
    };
    if (!j.is_object()) iod::json_fail(where, "(top level)", "tokenizer.json is not a JSON object");

    // The model: vocabulary, merges, options.
    const iod::Json& model = iod::require_member(j, "model", where);
    if (!model.is_object()) iod::json_fail(where, "model", "expected an object");
    if (const iod::Json* type = iod::find_member(model, "type")) {
      const std::string& ty = iod::json_string(*type, "model.type", where);
      if (ty != "BPE") unsupported("model type \"" + ty + "\" (gsq reads BPE)");
    }
    const iod::Json& vocab = iod::require_member(model, "vocab", where);
    if (!vocab.is_object()) iod::json_fail(where, "model.vocab", "expected an object");
    const std::int64_t kMaxId = std::numeric_limits<std::int32_t>::max() - 1;
    // Ids must be dense, so none can reach the number of entries that define them; this
    // also bounds the table below by the size of the file.
    const iod::Json* added_list = iod::find_member(j, "added_tokens");
    const std::int64_t id_limit = static_cast<std::int64_t>(
        vocab.size() + (added_list != nullptr && added_list->is_array() ? added_list->size() : 0));
    std::vector<std::optional<std::string>> by_id;
    auto define = [&](std::int64_t id, const std::string& text, const char* what) {
      if (id >= id_limit)
        iod::json_fail(where, what,
                       "id " + std::to_string(id) + " leaves a gap in the ids (only " +
                           std::to_string(id_limit) + " entries define ids)");
      if (by_id.size() <= static_cast<std::size_t>(id)) by_id.resize(static_cast<std::size_t>(id) + 1);
      by_id[static_cast<std::size_t>(id)] = text;
    };
    vocab_.reserve(vocab.size() * 2);
    for (const auto& [piece, value] : vocab.items()) {
      const std::int64_t id = iod::json_int(value, "model.vocab", where, 0, kMaxId);
      if (by_id.size() > static_cast<std::size_t>(id) && by_id[static_cast<std::size_t>(id)])
        iod::json_fail(where, "model.vocab", "id " + std::to_string(id) + " used twice");
      define(id, piece, "model.vocab");
      vocab_.emplace(piece, static_cast<std::int32_t>(id));
    }
    auto optional_string = [&](const iod::Json& obj, const char* key) -> std::optional<std::string> {
      const iod::Json* v = iod::find_member(obj, key);
      if (v == nullptr || v->is_null()) return std::nullopt;
      return iod::json_string(*v, key, where);
    };
    auto optional_bool = [&](const iod::Json& obj, const char* key, bool fallback) {
      const iod::Json* v = iod::find_member(obj, key);
      return v == nullptr || v->is_null() ? fallback : iod::json_bool(*v, key, where);
    };
    if (const auto unk = optional_string(model, "unk_token")) {
      unk_id_ = vocab_find(*unk);
      if (unk_id_ < 0) iod::json_fail(where, "model.unk_token", "\"" + *unk + "\" is not in the vocabulary");
    }
    fuse_unk_ = optional_bool(model, "fuse_unk", false);
    byte_fallback_ = optional_bool(model, "byte_fallback", false);
    ignore_merges_ = optional_bool(model, "ignore_merges", false);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (const auto v = optional_string(model, key); v && !v->empty())
        unsupported(std::string("model.") + key + " \"" + *v + "\"");
    if (const iod::Json* v = iod::find_member(model, "dropout"); v != nullptr && !v->is_null())
      if (iod::json_number(*v, "model.dropout", where) != 0.0) unsupported("BPE dropout");

    const iod::Json& merges = iod::require_member(model, "merges", where);
    if (!merges.is_array()) iod::json_fail(where, "model.merges", "expected an array");
    merges_.reserve(merges.size() * 2);
    std::int32_t rank = 0;
    for (const iod::Json& m : merges) {
      std::string a, b;
      if (m.is_string()) {  // "a b"
        const std::string& s = m.get_ref<const std::string&>();
        const std::size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          iod::json_fail(where, "model.merges", "merge \"" + s + "\" is not two tokens \"a b\"");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        iod::json_fail(where, "model.merges", "a merge is neither \"a b\" nor [\"a\", \"b\"]");
      }
      const std::int32_t ia = vocab_find(a), ib = vocab_find(b), im = vocab_find(a + b);
      if (ia < 0 || ib < 0 || im < 0)
        iod::json_fail(where, "model.merges",
                       "merge " + std::to_string(rank) + " (\"" + a + "\", \"" + b +
                           "\") uses a token outside the vocabulary");
      merges_.emplace(pair_key(ia, ib), Merge{rank, im});  // the first (best) rank wins
      ++rank;
    }
    byte_ids_.fill(-1);
    for (int byte = 0; byte < 256; ++byte) {
      static const char* kHex = "0123456789ABCDEF";
      const std::string s = std::string("<0x") + kHex[byte >> 4] + kHex[byte & 15] + ">";
      byte_ids_[static_cast<std::size_t>(byte)] = vocab_find(s);
    }

    // Added tokens.
    std::vector<std::pair<std::string, std::int32_t>> raw_added, normalized_added;
    std::vector<bool> special(by_id.size(), false);
    if (const iod::Json* added = added_list; added != nullptr && !added->is_null()) {
      if (!added->is_array()) iod::json_fail(where, "added_tokens", "expected an array");
      for (const iod::Json& a : *added) {
        if (!a.is_object()) iod::json_fail(where, "added_tokens", "expected objects");
        const std::int64_t id = iod::json_int(iod::require_member(a, "id", where), "added_tokens.id", where, 0, kMaxId);
        const std::string& content =
            iod::json_string(iod::require_member(a, "content", where), "added_tokens.content", where);
        if (content.empty()) iod::json_fail(where, "added_tokens.content", "empty");
        const bool is_special = optional_bool(a, "special", false);
        const bool normalized = optional_bool(a, "normalized", !is_special);
        if (by_id.size() <= static_cast<std::size_t>(id) || !by_id[static_cast<std::size_t>(id)] ||
            *by_id[static_cast<std::size_t>(id)] != content)
          define(id, content, "added_tokens");
        if (special.size() < by_id.size()) special.resize(by_id.size(), false);
        special[static_cast<std::size_t>(id)] = special[static_cast<std::size_t>(id)] || is_special;
        (normalized ? normalized_added : raw_added).emplace_back(content, static_cast<std::int32_t>(id));
      }
    }
    pieces_.resize(by_id.size());
    for (std::size_t i = 0; i < by_id.size(); ++i) {
      if (!by_id[i]) iod::json_fail(where, "model.vocab", "no token has id " + std::to_string(i));
      pieces_[i] = std::move(*by_id[i]);
    }
    if (pieces_.empty()) iod::json_fail(where, "model.vocab", "empty");
    special_ = std::move(special);
    special_.resize(pieces_.size(), false);

    // Normalizer, pre-tokenizer.
    if (const iod::Json* n = iod::find_member(j, "normalizer"); n != nullptr && !n->is_null())
      parse_normalizer(*n, where, name);
    if (const iod::Json* p = iod::find_member(j, "pre_tokenizer"); p != nullptr && !p->is_null())
      unsupported("pre_tokenizer " + (p->is_object() && p->contains("type") ? p->at("type").dump() : p->dump().substr(0, 40)) +
                  " (gsq reads tokenizers without one)");
    for (auto& [content, id] : raw_added) raw_added_.push_back({content, id});
    for (auto& [content, id] : normalized_added) {
      std::string pattern = normalize(content);
      if (!pattern.empty()) normalized_added_.push_back({std::move(pattern), id});
    }

    // Post-processor → BOS prefix / EOS suffix.
    if (const iod::Json* p = iod::find_member(j, "post_processor"); p != nullptr && !p->is_null())
      parse_post_processor(*p, where, name);
    // Decoder.
    if (const iod::Json* d = iod::find_member(j, "decoder"); d != nullptr && !d->is_null())
      parse_decoder(*d, where, name);

    // BOS/EOS when the template does not say: tokenizer_config.json, then usual names.
    if (tokenizer_config != nullptr) {
      const iod::Json c = iod::parse_json(tokenizer_config->bytes(), tokenizer_config->name(), 0);
      const iod::JsonWhere cwhere{tokenizer_config->name(), 0};
      auto token_of = [&](const char* key) -> std::int32_t {
        const iod::Json* v = iod::find_member(c, key);
        if (v == nullptr || v->is_null()) return -1;
        const iod::Json& content = v->is_object() ? iod::require_member(*v, "content", cwhere) : *v;
        return find_token(iod::json_string(content, key, cwhere));
      };
      bos_id_ = token_of("bos_token");
      eos_id_ = token_of("eos_token");
    }
    if (bos_id_ < 0)
      for (const char* s : {"<s>", "<|begin_of_text|>", "<bos>"})
        if (bos_id_ < 0) bos_id_ = find_token(s);
    if (eos_id_ < 0)
      for (const char* s : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})
        if (eos_id_ < 0) eos_id_ = find_token(s);
  }

  std::int32_t find_token(std::string_view s) const {
    for (std::size_t i = 0; i < pieces_.size(); ++i)
      if (pieces_[i] == s) return static_cast<std::int32_t>(i);
    return -1;
  }

  static std::string string_pattern(const io::detail::Json& step, const io::detail::JsonWhere& where,
                                    const std::string& file, const char* what) {
    namespace iod = io::detail;
    const iod::Json& pattern = iod::require_member(step, "pattern", where);
    const iod::Json* s = iod::find_member(pattern, "String");
    if (s == nullptr)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             std::string("unsupported tokenizer: ") + what +
                                 " with a non-string (regex) pattern",
                             file, 0);
    const std::string& text = iod::json_string(*s, what, where);
    if (text.empty()) iod::json_fail(where, what, "empty pattern");
    return text;
  }

  void parse_normalizer(const io::detail::Json& n, const io::detail::JsonWhere& where,
                        const std::string& file) {
    namespace iod = io::detail;
    const std::string& type = iod::json_string(iod::require_member(n, "type", where), "normalizer.type", where);
    if (type == "Sequence") {
      const iod::Json& list = iod::require_member(n, "normalizers", where);
      if (!list.is_array()) iod::json_fail(where, "normalizer.normalizers", "expected an array");
      for (const iod::Json& step : list) parse_normalizer(step, where, file);
    } else if (type == "Prepend") {
      normalizers_.push_back(
          {true, {}, iod::json_string(iod::require_member(n, "prepend", where), "normalizer.prepend", where)});
    } else if (type == "Replace") {
      normalizers_.push_back({false, string_pattern(n, where, file, "normalizer.Replace"),
                              iod::json_string(iod::require_member(n, "content", where),
                                               "normalizer.content", where)});
    } else {
      detail::throw_io_error(ErrorCode::kCorrupt, "unsupported tokenizer: normalizer " + type, file, 0);
    }
  }

  void parse_decoder(const io::detail::Json& d, const io::detail::JsonWhere& where,
                     const std::string& file) {
    namespace iod = io::detail;
    const std::string& type = iod::json_string(iod::require_member(d, "type", where), "decoder.type", where);
    if (type == "Sequence") {
      const iod::Json& list = iod::require_member(d, "decoders", where);
      if (!list.is_array()) iod::json_fail(where, "decoder.decoders", "expected an array");
      for (const iod::Json& step : list) parse_decoder(step, where, file);
    } else if (type == "Replace") {
      decoders_.push_back({DecoderKind::kReplace, string_pattern(d, where, file, "decoder.Replace"),
                           iod::json_string(iod::require_member(d, "content", where), "decoder.content", where)});
    } else if (type == "ByteFallback") {
      decoders_.push_back({DecoderKind::kByteFallback, {}, {}});
    } else if (type == "Fuse") {
      decoders_.push_back({DecoderKind::kFuse, {}, {}});
    } else if (type == "Strip") {
      DecoderStep s{DecoderKind::kStrip, {}, iod::json_string(iod::require_member(d, "content", where), "decoder.content", where)};
      if (s.content.empty() || io::detail::utf8_char_length(s.content, 0) != s.content.size())
        iod::json_fail(where, "decoder.Strip.content", "must be one character");
      s.start = iod::json_int(iod::require_member(d, "start", where), "decoder.Strip.start", where, 0, 1 << 20);
      s.stop = iod::json_int(iod::require_member(d, "stop", where), "decoder.Strip.stop", where, 0, 1 << 20);
      decoders_.push_back(std::move(s));
    } else {
      detail::throw_io_error(ErrorCode::kCorrupt, "unsupported tokenizer: decoder " + type, file, 0);
    }
  }

  void parse_post_processor(const io::detail::Json& p, const io::detail::JsonWhere& where,
                            const std::string& file) {
    namespace iod = io::detail;
    const std::string& type = iod::json_string(iod::require_member(p, "type", where), "post_processor.type", where);
    if (type != "TemplateProcessing")
      detail::throw_io_error(ErrorCode::kCorrupt, "unsupported tokenizer: post_processor " + type, file, 0);
    const iod::Json& single = iod::require_member(p, "single", where);
    const iod::Json& specials = iod::require_member(p, "special_tokens", where);
    if (!single.is_array()) iod::json_fail(where, "post_processor.single", "expected an array");
    bool seen_sequence = false;
    for (const iod::Json& item : single) {
      if (const iod::Json* seq = iod::find_member(item, "Sequence")) {
        (void)seq;
        if (seen_sequence) iod::json_fail(where, "post_processor.single", "two sequences");
        seen_sequence = true;
        continue;
      }
      const iod::Json* st = iod::find_member(item, "SpecialToken");
      if (st == nullptr) iod::json_fail(where, "post_processor.single", "an item is neither Sequence nor SpecialToken");
      const std::string& key = iod::json_string(iod::require_member(*st, "id", where), "SpecialToken.id", where);
      const iod::Json& entry = iod::require_member(specials, key, where);
      const iod::Json& list = iod::require_member(entry, "ids", where);
      if (!list.is_array()) iod::json_fail(where, "special_tokens.ids", "expected an array");
      for (const iod::Json& id : list) {
        const std::int64_t v = iod::json_int(id, "special_tokens.ids", where, 0, vocab_size() - 1);
        (seen_sequence ? suffix_ : prefix_).push_back(static_cast<std::int32_t>(v));
      }
    }
    if (!seen_sequence) iod::json_fail(where, "post_processor.single", "has no $A sequence");
  }

  // ---- encoding ------------------------------------------------------------------------

  std::string normalize(std::string_view text) const {
    std::string s(text);
    for (const NormalizerStep& step : normalizers_) {
      if (step.prepend) {
        if (!s.empty()) s.insert(0, step.content);
        continue;
      }
      std::string out;
      out.reserve(s.size() + s.size() / 4);
      std::size_t i = 0;
      for (std::size_t hit; (hit = s.find(step.pattern, i)) != std::string::npos; i = hit + step.pattern.size()) {
        out.append(s, i, hit - i);
        out += step.content;
      }
      out.append(s, i, std::string::npos);
      s = std::move(out);
    }
    return s;
  }

  /// Calls emit(piece, -1) for text between matches and emit({}, id) for each added token
  /// (leftmost-longest match).
  template <class Emit>
  static void split_added(std::string_view text, const std::vector<AddedPattern>& patterns, Emit&& emit) {
    if (patterns.empty()) {
      if (!text.empty()) emit(text, -1);
      return;
    }
    std::size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedPattern* best = nullptr;
      for (const AddedPattern& p : patterns)
        if (p.text[0] == text[i] && (best == nullptr || p.text.size() > best->text.size()) &&
            text.compare(i, p.text.size(), p.text) == 0)
          best = &p;
      if (best == nullptr) {
        ++i;
        continue;
      }
      if (i > start) emit(text.substr(start, i - start), -1);
      emit(std::string_view(), best->id);
      i += best->text.size();
      start = i;
    }
    if (start < text.size()) emit(text.substr(start), -1);
  }

  void tokenize_word(std::string_view word, std::vector<std::int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      const std::int32_t whole = vocab_find(word);
      if (whole >= 0) {
        out.push_back(whole);
        return;
      }
    }
    std::vector<std::int32_t> symbols;
    symbols.reserve(word.size());
    bool unk_pending = false;
    for (std::size_t i = 0; i < word.size();) {
      const std::size_t len = io::detail::utf8_char_length(word, i);
      const std::string_view ch = word.substr(i, len);
      i += len;
      const std::int32_t id = vocab_find(ch);
      if (id >= 0) {
        if (unk_pending) symbols.push_back(unk_id_);
        unk_pending = false;
        symbols.push_back(id);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (const char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {  // `tokenizers` leaves a pending <unk> pending here
          for (const char c : ch) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
          continue;
        }
      }
      if (unk_id_ < 0) continue;  // no unk token: the character is dropped
      if (unk_pending && !fuse_unk_) symbols.push_back(unk_id_);
      unk_pending = true;
    }
    if (unk_pending) symbols.push_back(unk_id_);
    io::detail::bpe_merge(symbols, [&](std::int32_t a, std::int32_t b, std::int32_t& merged, std::uint32_t& priority) {
      auto it = merges_.find(pair_key(a, b));
      if (it == merges_.end()) return false;
      merged = it->second.merged;
      priority = ~static_cast<std::uint32_t>(it->second.rank);  // lowest rank first
      return true;
    });
    out.insert(out.end(), symbols.begin(), symbols.end());
  }

  // ---- decoding ------------------------------------------------------------------------

  static void apply_decoder(const DecoderStep& step, std::vector<std::string>& tokens) {
    switch (step.kind) {
      case DecoderKind::kReplace:
        for (std::string& t : tokens) {
          std::string out;
          std::size_t i = 0;
          for (std::size_t hit; (hit = t.find(step.pattern, i)) != std::string::npos; i = hit + step.pattern.size()) {
            out.append(t, i, hit - i);
            out += step.content;
          }
          out.append(t, i, std::string::npos);
          t = std::move(out);
        }
        break;
      case DecoderKind::kByteFallback: {
        std::vector<std::string> out;
        std::string bytes;
        auto flush = [&]() {
          if (bytes.empty()) return;
          if (io::detail::utf8_valid(bytes)) {
            out.push_back(bytes);
          } else {
            for (std::size_t k = 0; k < bytes.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
          }
          bytes.clear();
        };
        for (std::string& t : tokens) {
          const int b = io::detail::byte_piece_value(t);
          if (b >= 0) {
            bytes.push_back(static_cast<char>(b));
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case DecoderKind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderKind::kStrip:
        for (std::string& t : tokens) {
          std::size_t begin = 0;
          for (std::int64_t k = 0; k < step.start && t.compare(begin, step.content.size(), step.content) == 0; ++k)
            begin += step.content.size();
          std::size_t end = t.size();
          for (std::int64_t k = 0; k < step.stop && end >= begin + step.content.size() &&
                                   t.compare(end - step.content.size(), step.content.size(), step.content) == 0;
               ++k)
            end -= step.content.size();
          t = t.substr(begin, end - begin);
        }
        break;
    }
  }

  std::vector<std::string> pieces_;  // id → token text (vocabulary and added tokens)
  std::vector<bool> special_;
  std::unordered_map<std::string, std::int32_t> vocab_;  // the BPE model's vocabulary
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::array<std::int32_t, 256> byte_ids_{};
  std::vector<NormalizerStep> normalizers_;
  std::vector<DecoderStep> decoders_;
  std::vector<AddedPattern> raw_added_, normalized_added_;
  std::vector<std::int32_t> prefix_, suffix_;
  std::int32_t unk_id_ = -1;
  std::int32_t bos_id_ = -1, eos_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
};

GSQ_NAMESPACE_END
