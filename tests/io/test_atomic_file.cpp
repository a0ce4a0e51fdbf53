// AtomicFileWriter: an interrupted or failed write never damages the existing file.
#include <doctest/doctest.h>

#include <csignal>
#include <sys/resource.h>

#include <map>
#include <string>
#include <vector>

#include "gsq/io/atomic_file.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "io/io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

// Limits the size of files this process may write (write() then fails with EFBIG, as on
// a full disk), restoring the old limit on scope exit.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = old_;
    lim.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &lim) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
  bool ok_ = false;
};

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("atomic file: commit replaces the target and leaves no temporary") {
    gsq::test::TempDir dir;
    gsq::test::write_text(dir / "f.txt", "old");
    {
      gsq::AtomicFileWriter w(dir / "f.txt");
      CHECK(w.temp_path().parent_path() == dir.path());
      w.write("new!", 4);
      CHECK(gsq::test::read_text(dir / "f.txt") == "old");  // untouched until commit
      w.commit();
      CHECK(w.committed());
    }
    CHECK(gsq::test::read_text(dir / "f.txt") == "new!");
    CHECK(dir.entries() == 1);
  }

  TEST_CASE("atomic file: abandoning a writer keeps the old file") {
    gsq::test::TempDir dir;
    gsq::test::write_text(dir / "f.txt", "old");
    {
      gsq::AtomicFileWriter w(dir / "f.txt");
      std::vector<std::uint8_t> big(3 << 20, 7);  // beyond the buffer: really written
      w.write(big.data(), big.size());
      CHECK(w.offset() == static_cast<std::int64_t>(big.size()));
    }  // e.g. an exception unwound here
    CHECK(gsq::test::read_text(dir / "f.txt") == "old");
    CHECK(dir.entries() == 1);
  }

  TEST_CASE("atomic file: a write failing half-way leaves the existing file intact") {
    gsq::test::TempDir dir;
    std::map<std::string, gsq::Tensor<float>> tensors;
    tensors.emplace("w", gsq::test::random_matrix(512, 512, 9));  // 1 MB of data
    gsq::write_safetensors(dir / "m.safetensors", tensors);
    const std::vector<std::uint8_t> before = gsq::test::read_bytes(dir / "m.safetensors");
    tensors.emplace("v", gsq::test::random_matrix(512, 512, 10));
    {
      FileSizeLimit limit(256 << 10);
      if (!limit.ok()) {
        MESSAGE("SKIPPED: setrlimit(RLIMIT_FSIZE) refused");
        return;
      }
      try {
        gsq::write_safetensors(dir / "m.safetensors", tensors);
        FAIL_CHECK("the write should have failed at 256 KB");
      } catch (const gsq::IoError& e) {
        CHECK(e.code() == gsq::ErrorCode::kOpenFailed);
        CHECK(e.file() == (dir / "m.safetensors").string());
        CHECK(e.offset() > 0);
        CHECK(e.offset() <= (1 << 20) + 4096);  // where it failed, at most one buffer beyond the limit
      }
    }
    CHECK(gsq::test::read_bytes(dir / "m.safetensors") == before);
    CHECK(dir.entries() == 1);
    CHECK(gsq::SafetensorsFile::open(dir / "m.safetensors").entries().size() == 1);
  }

  TEST_CASE("atomic file: an unwritable directory is an IoError naming the target") {
    const auto e = gsq::test::expect_io_error([] { gsq::AtomicFileWriter w("/nonexistent_gsq_dir/x.bin"); });
    REQUIRE(e.has_value());
    CHECK(e->file() == "/nonexistent_gsq_dir/x.bin");
    CHECK(e->code() == gsq::ErrorCode::kOpenFailed);
  }

  TEST_CASE("mapped file: missing files and directories are IoErrors") {
    gsq::test::TempDir dir;
    const auto missing = gsq::test::expect_io_error([&] { (void)gsq::MappedFile::open(dir / "nope"); });
    REQUIRE(missing.has_value());
    CHECK(missing->offset() == -1);
    CHECK(gsq::test::expect_io_error([&] { (void)gsq::MappedFile::open(dir.path()); }).has_value());
    gsq::test::write_text(dir / "empty", "");
    const gsq::MappedFile empty = gsq::MappedFile::open(dir / "empty");
    CHECK(empty.size() == 0);
    gsq::test::write_text(dir / "x", "hello");
    gsq::MappedFile a = gsq::MappedFile::open(dir / "x");
    gsq::MappedFile b = std::move(a);
    CHECK(b.size() == 5);
    CHECK(std::string(reinterpret_cast<const char*>(b.data()), 5) == "hello");
    CHECK(a.size() == 0);  // NOLINT(bugprone-use-after-move): moved-from is empty
  }
}
