// gsq-export: a gsq model as a llama.cpp GGUF (and a LoRA adapter as a GGUF adapter).
//
//   gsq-export --model stories260K.bin --out stories.gguf --type q8_0
//   gsq-export --model stories260K.bin --adapter runs/w8/adapter --out merged.gguf
//              --lora-out adapter.gguf                  merged model + llama.cpp --lora file
//   gsq-export --model runs/l4q/merged/model.l4q.safetensors --tokenizer tok512.bin
//              --out l4q.gguf                           L4Q codes as Q4_1, no re-quantization
//
// --model is anything the other drivers read (llama2.c .bin, Hugging Face directory, GGUF,
// gsq-l4q file); --adapter a PEFT directory written by gsq-finetune (LoRA is merged,
// W0 + alpha/r·B·A; a quantized L4Q adapter becomes its quantized model). --type sets the
// storage of 2-D weights (norms stay F32); L4Q projections with group 32 and <= 4 bits are
// written as Q4_1 whatever --type says. What fell back or was rounded is printed.
#include <gsq/io/export.hpp>
#include <gsq/io/gguf_export.hpp>
#include <gsq/model/llama.hpp>

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/artifacts.hpp"
#include "support/cli.hpp"
#include "support/model.hpp"

namespace {

struct Options {
  std::string model, tokenizer, adapter, out, lora_out, type = "f32", name;
};

int run(const Options& o) {
  if (!o.adapter.empty()) driver::require_path(o.adapter, "--adapter");
  gsq::GgufExportOptions eo;
  try {
    eo.type = gsq::parse_gguf_type(o.type);
  } catch (const gsq::Error& e) {
    driver::config_error(std::string("--type: ") + e.what());
  }
  if (!o.lora_out.empty() && o.adapter.empty()) driver::config_error("--lora-out needs --adapter");
  eo.name = o.name.empty() ? std::filesystem::path(o.model).stem().string() : o.name;

  driver::BaseModel base = driver::load_base_model(o.model, o.tokenizer);
  std::optional<gsq::L4qQuantizedModel> l4q;
  gsq::LlamaWeights weights;
  if (driver::is_l4q_file(o.model)) {
    l4q = gsq::read_l4q_quantized(o.model);
    weights = std::move(base.weights);
  } else if (!o.adapter.empty()) {
    driver::AdapterSpec spec = driver::read_adapter_spec(o.adapter);
    gsq::LlamaOptions lo = spec.options();
    lo.l4q.warmup_steps = 0;
    gsq::Llama model(base.weights.config, driver::copy_tensors(base.weights), lo);
    driver::load_adapter(o.adapter, model);
    bool quantized = false;
    gsq::io::detail::for_each_l4q(model, [&](gsq::L4qLinear& p) { quantized = quantized || p.quantizing(); });
    if (quantized) {
      l4q = gsq::l4q_quantized_model(model);
      weights = l4q->dequantized();
    } else {
      weights = gsq::merged_llama_weights(model);
    }
    if (!o.lora_out.empty()) {
      if (spec.method != "lora") driver::config_error("--lora-out: the adapter is " + spec.method + ", not LoRA");
      std::vector<gsq::GgufLoraPair> pairs;
      std::map<std::string, gsq::GgufLoraPair> by_module;
      for (const gsq::Parameter& p : model.parameters()) {
        const bool a = p.name.ends_with(".lora_a"), b = p.name.ends_with(".lora_b");
        if (!a && !b) continue;
        const std::string module = p.name.substr(0, p.name.size() - 7);
        gsq::GgufLoraPair& pair = by_module[module];
        pair.canonical = module + ".weight";
        (a ? pair.a : pair.b) = p.value->clone();
      }
      for (auto& [module, pair] : by_module) pairs.push_back(std::move(pair));
      const std::int64_t bytes =
          gsq::write_gguf_lora_adapter(o.lora_out, base.weights.config, pairs, spec.alpha, eo.name + "-lora");
      std::printf("wrote %s: LoRA adapter, %zu projections, rank %lld, alpha %g (%lld bytes)\n", o.lora_out.c_str(),
                  pairs.size(), static_cast<long long>(spec.rank), static_cast<double>(spec.alpha),
                  static_cast<long long>(bytes));
    }
  } else {
    weights = std::move(base.weights);
  }
  const gsq::GgufVocab vocab = gsq::gguf_vocab(*base.tokenizer, base.tokenizer_path);
  const gsq::GgufExportReport r =
      gsq::write_gguf_llama(o.out, weights, vocab, eo, l4q ? &l4q->quantized : nullptr);
  std::printf("wrote %s: llama GGUF, %s weights, %lld bytes, vocabulary of %zu (%s)\n", o.out.c_str(),
              o.type.c_str(), static_cast<long long>(r.bytes), vocab.tokens.size(),
              std::string(base.tokenizer->kind()).c_str());
  if (r.l4q_tensors > 0)
    std::printf("  %lld L4Q projections as Q4_1 from their codes; max |weight change| %g\n",
                static_cast<long long>(r.l4q_tensors), r.l4q_max_abs_diff);
  for (const std::string& note : r.notes) std::printf("  note: %s\n", note.c_str());
  return driver::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"gsq-export: write a model (optionally with its adapter merged) as a llama.cpp GGUF"};
  app.add_option("--model", o.model, "model: llama2.c .bin, Hugging Face directory, GGUF or gsq-l4q file")->required();
  app.add_option("--tokenizer", o.tokenizer, "tokenizer file (default: the one next to the model)");
  app.add_option("--adapter", o.adapter, "a PEFT adapter directory to merge (gsq-finetune's OUT/adapter)");
  app.add_option("--out", o.out, "the GGUF file to write")->required();
  app.add_option("--type", o.type, "storage of 2-D weights: f32, f16, bf16, q8_0, q4_0, q4_1")->capture_default_str();
  app.add_option("--lora-out", o.lora_out, "also write the LoRA adapter as a llama.cpp GGUF adapter (--lora)");
  app.add_option("--name", o.name, "general.name (default: the model file's stem)");
  return driver::run_driver("gsq-export", app, argc, argv, [&] { return run(o); });
}
