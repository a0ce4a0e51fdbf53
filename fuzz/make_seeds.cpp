// gsq-fuzz-seeds OUT_DIR [DATA_DIR]: writes each fuzz target's seed corpus to
// OUT_DIR/<target>/<seed> (see fuzz_seeds.hpp), checking that every seed gets the verdict
// it was made for — otherwise the seeds or the parser drifted.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "fuzz_seeds.hpp"
#include "fuzz_targets.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR [DATA_DIR]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::optional<std::filesystem::path> data;
  if (argc == 3 && std::filesystem::is_directory(argv[2])) data = argv[2];
  int bad = 0;
  for (const gsq::fuzz::Target& target : gsq::fuzz::kTargets) {
    const std::filesystem::path dir = out / std::string(target.name);
    std::filesystem::create_directories(dir);
    const auto seeds = gsq::fuzz::make_seeds(target.name, data);
    for (const gsq::fuzz::Seed& seed : seeds) {
      std::ofstream(dir / seed.name, std::ios::binary)
          .write(reinterpret_cast<const char*>(seed.bytes.data()), static_cast<std::streamsize>(seed.bytes.size()));
      const bool accepted = target.run(seed.bytes) == gsq::fuzz::Outcome::kAccepted;
      if (accepted != seed.valid) {
        std::fprintf(stderr, "seed %s/%s is %s by its parser\n", std::string(target.name).c_str(), seed.name.c_str(),
                     accepted ? "accepted (expected a rejection)" : "rejected");
        ++bad;
      }
    }
    std::printf("%-18s %zu seeds\n", std::string(target.name).c_str(), seeds.size());
  }
  return bad == 0 ? 0 : 1;
}
