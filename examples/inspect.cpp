// gsq-inspect: what a model, tokenizer, adapter or checkpoint file holds.
//
//   gsq-inspect FILE [--summary] [--tokens N] [--encode TEXT]
//
// FILE may be a llama2.c checkpoint (.bin), a Hugging Face model directory (or its
// config.json / model.safetensors; sharded ones too), any safetensors file (adapters, checkpoints), a
// llama2.c tokenizer (tok*.bin), a tokenizer.json or a GGUF file (metadata and tensors with
// their ggml types). The format is decided from the content, not the name (a .safetensors
// name is trusted: a broken one is reported by the safetensors parser). PEFT adapter
// directories and checkpoint directories (the root with its step-N directories, or one
// step) are recognised too. It prints the format, the config, and every tensor with dtype,
// shape, bytes and offset, reading headers only (no tensor data), so it is quick on large
// files. A file that does not parse exits with status 1 and gsq's error message (file and
// byte offset); bad flags exit with status 2.
#include <CLI/CLI.hpp>
#include <gsq/io/adapter.hpp>
#include <gsq/io/checkpoint.hpp>
#include <gsq/io/gguf_llama.hpp>
#include <gsq/io/io.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string path;
  bool summary = false;
  int tokens = 8;
  std::string encode;
};

/// Control characters and stray bytes as escapes, so pieces print on one line.
std::string printable(std::string_view s) {
  std::string out;
  const bool valid = gsq::io::detail::utf8_valid(s);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F || (c >= 0x80 && !valid)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

std::string bytes_string(std::int64_t bytes) {
  char buf[64];
  if (bytes >= (1 << 20)) {
    std::snprintf(buf, sizeof(buf), "%lld bytes (%.1f MiB)", static_cast<long long>(bytes), static_cast<double>(bytes) / (1 << 20));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld bytes", static_cast<long long>(bytes));
  }
  return buf;
}

void print_config(const gsq::LlamaConfig& c) {
  std::printf("config:     dim %lld, hidden %lld, layers %lld, heads %lld, kv heads %lld (head size %lld), vocab %lld, max seq %lld\n",
              static_cast<long long>(c.dim), static_cast<long long>(c.hidden_dim),
              static_cast<long long>(c.n_layers), static_cast<long long>(c.n_heads),
              static_cast<long long>(c.n_kv_heads), static_cast<long long>(c.head_size()),
              static_cast<long long>(c.vocab_size), static_cast<long long>(c.max_seq_len));
  std::printf("            rms eps %g, rope theta %g (%s pairs), classifier %s, bos %d, eos %d\n",
              static_cast<double>(c.norm_eps), static_cast<double>(c.rope_theta),
              c.rope_style == gsq::RopeStyle::kHalf ? "rotate_half" : "interleaved",
              c.tied_embeddings ? "tied to the embedding" : "separate", c.bos_id, c.eos_id);
}

struct Row {
  std::string name, dtype, shape;
  std::int64_t bytes, offset;
};

void print_rows(const std::vector<Row>& rows, const Options& opt) {
  std::int64_t total = 0;
  for (const Row& r : rows) total += r.bytes;
  std::printf("tensors:    %zu, %s of data\n", rows.size(), bytes_string(total).c_str());
  if (opt.summary) return;
  std::size_t width = 4;
  for (const Row& r : rows) width = std::max(width, r.name.size());
  std::printf("  %-*s  %-7s %-16s %12s %12s\n", static_cast<int>(width), "name", "dtype", "shape", "bytes", "offset");
  for (const Row& r : rows)
    std::printf("  %-*s  %-7s %-16s %12lld %12lld\n", static_cast<int>(width), r.name.c_str(), r.dtype.c_str(),
                r.shape.c_str(), static_cast<long long>(r.bytes), static_cast<long long>(r.offset));
}

std::vector<Row> safetensors_rows(const gsq::SafetensorsFile& st) {
  std::vector<const gsq::SafetensorsEntry*> order;
  for (const gsq::SafetensorsEntry& e : st.entries()) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  std::vector<Row> rows;
  for (const gsq::SafetensorsEntry* e : order)
    rows.push_back({e->name, std::string(gsq::dtype_name(e->dtype)), gsq::shape_to_string(e->shape), e->bytes(), e->begin});
  return rows;
}

std::int64_t element_count(const gsq::SafetensorsFile& st) {
  std::int64_t n = 0;
  for (const gsq::SafetensorsEntry& e : st.entries()) n += e.numel();
  return n;
}

void print_metadata(const gsq::SafetensorsFile& st) {
  for (const auto& [k, v] : st.metadata()) std::printf("metadata:   %s = %s\n", printable(k).c_str(), printable(v).c_str());
}

void inspect_hf_directory(const fs::path& dir, const Options& opt) {
  const fs::path config_path = dir / "config.json";
  const gsq::LlamaConfig config = gsq::read_hf_config(config_path);
  const gsq::SafetensorsShards st = gsq::SafetensorsShards::open(dir);
  if (st.sharded())
    std::printf("format:     Hugging Face LLaMA directory (config.json + %zu safetensors shards, %s)\n",
                st.shard_count(), bytes_string(st.file_bytes()).c_str());
  else
    std::printf("format:     Hugging Face LLaMA directory (config.json + model.safetensors, %s)\n",
                bytes_string(st.file_bytes()).c_str());
  print_config(config);
  const auto plan = gsq::hf_llama_tensor_plan(config, st, config_path.string());  // throws if inconsistent
  std::int64_t params = 0;
  for (std::size_t i = 0; i < st.shard_count(); ++i) params += element_count(st.shard(i));
  std::printf("parameters: %lld in %zu canonical tensors (all present, shapes match the config)\n",
              static_cast<long long>(params), plan.size());
  for (const auto& [k, v] : st.metadata()) std::printf("metadata:   %s = %s\n", printable(k).c_str(), printable(v).c_str());
  for (std::size_t i = 0; i < st.shard_count(); ++i) {
    if (st.sharded()) std::printf("shard:      %s\n", st.shard(i).name().c_str());
    print_rows(safetensors_rows(st.shard(i)), opt);
  }
  for (const char* tok : {"tokenizer.json", "tokenizer.model", "tokenizer.bin"})
    if (fs::exists(dir / tok)) std::printf("tokenizer:  %s\n", (dir / tok).string().c_str());
}

void inspect_llama2c(const gsq::MappedFile& file, const Options& opt) {
  const gsq::Llama2cLayout layout = gsq::llama2c_layout(file);
  std::printf("format:     llama2.c checkpoint (legacy version 0, float32), %s\n",
              bytes_string(layout.file_bytes).c_str());
  print_config(layout.config);
  std::int64_t params = 0;
  std::vector<Row> rows;
  for (const gsq::Llama2cLayout::Region& r : layout.tensors) {
    params += r.bytes / 4;
    rows.push_back({r.name, "F32", gsq::shape_to_string(r.shape), r.bytes, r.offset});
  }
  std::printf("parameters: %lld (RoPE tables skipped: %lld bytes at offset %lld)\n",
              static_cast<long long>(params), static_cast<long long>(layout.rope_tables_bytes),
              static_cast<long long>(layout.rope_tables_offset));
  print_rows(rows, opt);
}

void inspect_safetensors(const gsq::SafetensorsFile& st, const Options& opt) {
  bool lora = false, llama = false;
  for (const gsq::SafetensorsEntry& e : st.entries()) {
    lora = lora || e.name.find("lora_A") != std::string::npos || e.name.find("lora_B") != std::string::npos ||
           e.name.find("lora_a") != std::string::npos || e.name.find("lora_b") != std::string::npos;
    llama = llama || e.name.starts_with("model.layers.");
  }
  // gsq's own files say what they are in __metadata__ (gsq/io/export.hpp, checkpoint.hpp).
  auto meta_is = [&](const char* key, const char* value) {
    auto it = st.metadata().find(key);
    return it != st.metadata().end() && it->second == value;
  };
  const char* kind = meta_is("format", "gsq-l4q")          ? "gsq L4Q quantized model"
                     : meta_is("format", "gsq-checkpoint") ? "gsq checkpoint parameters"
                     : st.metadata().count("optimizer") != 0 ? "gsq checkpoint optimizer state"
                     : lora                                ? "LoRA adapter"
                     : llama                               ? "LLaMA weights"
                                                           : "tensors";
  std::printf("format:     safetensors (%s), %s, header %lld bytes\n", kind,
              bytes_string(st.file_bytes()).c_str(), static_cast<long long>(st.header_bytes()));
  std::printf("elements:   %lld\n", static_cast<long long>(element_count(st)));
  print_metadata(st);
  print_rows(safetensors_rows(st), opt);
}

void inspect_tokenizer(const gsq::Tokenizer& tok, const Options& opt) {
  std::printf("format:     %s tokenizer\n", std::string(tok.kind()).c_str());
  std::printf("vocab:      %d tokens\n", tok.vocab_size());
  auto describe = [&](std::int32_t id) {
    return id < 0 ? std::string("none") : std::to_string(id) + " \"" + printable(tok.piece(id)) + "\"";
  };
  std::printf("bos:        %s\neos:        %s\n", describe(tok.bos_id()).c_str(), describe(tok.eos_id()).c_str());
  if (const auto* l = dynamic_cast<const gsq::Llama2cTokenizer*>(&tok))
    std::printf("max token:  %d bytes\n", l->max_token_length());
  if (const auto* h = dynamic_cast<const gsq::HfBpeTokenizer*>(&tok))
    std::printf("merges:     %zu, unk %s\n", h->merge_count(), describe(h->unk_id()).c_str());
  if (!opt.summary) {
    const std::int32_t n = std::min(tok.vocab_size(), static_cast<std::int32_t>(std::max(opt.tokens, 0)));
    if (n > 0) std::printf("first %d pieces:\n", n);
    for (std::int32_t i = 0; i < n; ++i) {
      std::printf("  %6d  \"%s\"", i, printable(tok.piece(i)).c_str());
      if (const auto* l = dynamic_cast<const gsq::Llama2cTokenizer*>(&tok)) std::printf("  score %g", static_cast<double>(l->score(i)));
      std::printf("\n");
    }
  }
  if (!opt.encode.empty()) {
    const std::vector<std::int32_t> ids = tok.encode(opt.encode, true, false);
    std::printf("encode:     %zu ids:", ids.size());
    for (std::int32_t id : ids) std::printf(" %d", id);
    std::printf("\npieces:    ");
    for (std::int32_t id : ids) std::printf(" \"%s\"", printable(tok.piece(id)).c_str());
    std::printf("\ndecoded:    \"%s\"\n", printable(tok.decode(ids)).c_str());
  }
}

void inspect_gguf(gsq::GgufFile g, const Options& opt) {
  std::printf("format:     GGUF v%u, alignment %u, %zu metadata keys, data at %lld\n", g.version(), g.alignment(),
              g.metadata().size(), static_cast<long long>(g.data_offset()));
  for (const auto& [k, v] : g.metadata())
    std::printf("metadata:   %s = %s\n", printable(k).c_str(), printable(v.to_string()).c_str());
  const gsq::GgufValue* arch = g.find("general.architecture");
  const gsq::GgufValue* type = g.find("general.type");
  if (arch != nullptr && arch->s == "llama" && (type == nullptr || type->s == "model")) print_config(gsq::gguf_llama_config(g));
  std::vector<Row> rows;
  for (const gsq::GgufTensorInfo& t : g.tensors())
    rows.push_back({t.name, gsq::ggml_type_name(t.type), gsq::shape_to_string(t.shape()), t.bytes, t.data_begin});
  print_rows(rows, opt);
}

/// A safetensors file: named so, or an 8-byte length followed by a JSON header. The
/// length is not trusted here — a broken one is the safetensors parser's to report,
/// not a reason to blame the llama2.c parser.
bool looks_like_safetensors(const gsq::MappedFile& f, const fs::path& path) {
  if (path.extension() == ".safetensors") return true;
  return f.size() >= 9 && f.data()[8] == '{';
}

/// A PEFT adapter directory (gsq-finetune's OUT/adapter): its config and tensors.
void inspect_adapter_directory(const fs::path& dir, const Options& opt) {
  const gsq::AdapterConfig c = gsq::read_adapter_config(dir);
  const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(dir / gsq::kAdapterWeightsFile);
  std::printf("format:     PEFT adapter directory (adapter_config.json + %s, %s)\n",
              std::string(gsq::kAdapterWeightsFile).c_str(), bytes_string(st.file_bytes()).c_str());
  std::string targets;
  for (const std::string& t : c.target_modules) targets += (targets.empty() ? "" : ",") + t;
  std::printf("adapter:    %s, rank %lld, alpha %g, targets %s\n", c.method.c_str(), static_cast<long long>(c.rank),
              static_cast<double>(c.alpha), targets.c_str());
  if (c.method == "l4q")
    std::printf("            int%d codes, group %d, %s\n", c.quant_bits, c.quant_group,
                c.quantized ? "quantizer live" : "saved during the LoRA warm-up");
  if (!c.base_model_name_or_path.empty()) std::printf("base model: %s\n", c.base_model_name_or_path.c_str());
  std::printf("elements:   %lld\n", static_cast<long long>(element_count(st)));
  print_rows(safetensors_rows(st), opt);
}

/// One checkpoint step directory: its state and tensors (checksums verified by loading).
void inspect_checkpoint_step(const fs::path& dir, const Options& opt) {
  const gsq::Checkpoint ck = gsq::load_checkpoint_dir(dir);
  std::printf("format:     gsq checkpoint step directory (checksums verified)\n");
  std::printf("step:       %lld, data cursor epoch %llu position %llu, seed %llu\n",
              static_cast<long long>(ck.trainer.step), static_cast<unsigned long long>(ck.cursor.epoch),
              static_cast<unsigned long long>(ck.cursor.position), static_cast<unsigned long long>(ck.seed));
  std::printf("optimizer:  %s, %zu state tensors\n", ck.trainer.optimizer.optimizer.c_str(),
              ck.trainer.optimizer.tensors.size());
  if (!ck.settings.empty()) std::printf("settings:   %s\n", ck.settings.dump().c_str());
  print_rows(safetensors_rows(gsq::SafetensorsFile::open(dir / "parameters.safetensors")), opt);
}

/// A checkpoint root (gsq-finetune's OUT/checkpoint): every step directory, complete or
/// not, and the one --resume would load.
void inspect_checkpoint_root(const fs::path& dir, const Options& opt) {
  std::printf("format:     gsq checkpoint directory\n");
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().starts_with("step-")) steps.push_back(e.path().filename().string());
  std::sort(steps.begin(), steps.end());
  for (const std::string& name : steps)
    std::printf("  %s  %s\n", name.c_str(),
                fs::exists(dir / name / gsq::kCheckpointManifestFile) ? "complete" : "unfinished (no manifest)");
  const std::optional<fs::path> current = gsq::find_checkpoint(dir);
  if (!current) {
    std::printf("resume:     none (no complete checkpoint)\n");
    return;
  }
  std::printf("resume:     %s\n", current->string().c_str());
  inspect_checkpoint_step(*current, opt);
}

void inspect(const Options& opt) {
  const fs::path path = opt.path;
  std::printf("file:       %s\n", path.string().c_str());
  if (fs::is_directory(path)) {
    if (fs::exists(path / "config.json")) return inspect_hf_directory(path, opt);
    if (fs::exists(path / gsq::kAdapterConfigFile)) return inspect_adapter_directory(path, opt);
    if (fs::exists(path / gsq::kCheckpointManifestFile) || fs::exists(path / "trainer_state.json"))
      return inspect_checkpoint_step(path, opt);
    bool has_steps = fs::exists(path / gsq::kCheckpointLatestFile);
    for (const auto& e : fs::directory_iterator(path))
      has_steps = has_steps || (e.is_directory() && e.path().filename().string().starts_with("step-"));
    if (has_steps) return inspect_checkpoint_root(path, opt);
    return inspect_tokenizer(*gsq::load_tokenizer(path), opt);
  }
  if (path.filename() == gsq::kSafetensorsIndexName)
    return inspect_hf_directory(path.parent_path().empty() ? fs::path(".") : path.parent_path(), opt);
  const gsq::MappedFile file = gsq::MappedFile::open(path);
  if (gsq::is_gguf(file)) return inspect_gguf(gsq::GgufFile::open(path), opt);
  if (looks_like_safetensors(file, path)) {
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::parse(gsq::MappedFile::open(path));
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    if (path.filename() == "model.safetensors" && fs::exists(dir / "config.json"))
      return inspect_hf_directory(dir, opt);
    return inspect_safetensors(st, opt);
  }
  if (gsq::io::detail::looks_like_json_object(file)) {
    const gsq::io::detail::Json j = gsq::io::detail::parse_json(file.bytes(), file.name(), 0);
    if (j.contains("model")) return inspect_tokenizer(*gsq::load_tokenizer(path), opt);
    if (j.contains("hidden_size")) {
      std::printf("format:     Hugging Face config.json\n");
      print_config(gsq::parse_hf_config(file));
      return;
    }
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt, "JSON, but neither a tokenizer.json nor a config.json",
                                file.name(), 0);
  }
  // No magic: a llama2.c checkpoint, else a llama2.c tokenizer; report the likelier error.
  try {
    return inspect_llama2c(file, opt);
  } catch (const gsq::IoError& model_error) {
    try {
      const auto tok = gsq::Llama2cTokenizer::parse(file);
      return inspect_tokenizer(*tok, opt);
    } catch (const gsq::IoError& tok_error) {
      const bool tokenizer_name = path.filename().string().find("tok") != std::string::npos;
      throw tokenizer_name ? tok_error : model_error;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"gsq-inspect: print what a model, tokenizer, adapter or checkpoint file holds"};
  app.add_option("file", opt.path,
                 "llama2.c .bin, Hugging Face model directory, .safetensors, tok*.bin or tokenizer.json")
      ->required();
  app.add_flag("--summary", opt.summary, "format, config and totals only (no tensor or piece list)");
  app.add_option("--tokens", opt.tokens, "tokenizers: how many pieces to list (default 8)")->check(CLI::Range(0, 1 << 30));
  app.add_option("--encode", opt.encode, "tokenizers: encode this text (with BOS) and show ids and pieces");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is a "parse error" that exits 0
  }
  try {
    inspect(opt);
  } catch (const gsq::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gsq-inspect: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gsq-inspect: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
