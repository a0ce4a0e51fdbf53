// gsq/io/io.hpp — everything in gsq's file layer: model, tokenizer and tensor files.
//
//   mapped_file.hpp      read-only bytes of a file (mmap) or a buffer
//   atomic_file.hpp      temporary file + fsync + rename writer
//   safetensors.hpp      safetensors read/write (F32/F16/BF16 → float; F32/BF16 out)
//   safetensors_sharded.hpp  sharded checkpoints (index + shards), streaming writer
//   random_checkpoint.hpp    random-weight HF directories of real model shapes
//   llama2c.hpp          llama2.c legacy checkpoints (.bin) read/write
//   hf_config.hpp        Hugging Face config.json → LlamaConfig
//   hf_llama.hpp         Hugging Face LLaMA directories
//   load_llama.hpp       load_llama(path): either of the above
//   tokenizer*.hpp       Tokenizer interface, llama2.c and HF BPE tokenizers, load_tokenizer
#pragma once

#include "gsq/io/atomic_file.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/hf_config.hpp"
#include "gsq/io/hf_llama.hpp"
#include "gsq/io/hf_tokenizer.hpp"
#include "gsq/io/llama2c.hpp"
#include "gsq/io/llama2c_tokenizer.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/load_llama.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/random_checkpoint.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/safetensors_sharded.hpp"
#include "gsq/io/tensor_util.hpp"
#include "gsq/io/tokenizer.hpp"
#include "gsq/io/tokenizer_factory.hpp"
