#include "migd/base/thread_name.h"

#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace migd::base {
namespace {

// What the kernel reports for the calling thread, read where top and the
// benchmark read it.
std::string KernelName() {
  std::ifstream f("/proc/thread-self/comm");
  std::string s;
  std::getline(f, s);
  return s;
}

TEST(ThreadName, NamesTheCallingThreadOnly) {
  std::string mine;
  std::string mine_in_kernel;
  std::thread t([&] {
    NameThisThread("dst-load");
    mine = ThisThreadName();
    mine_in_kernel = KernelName();
  });
  t.join();
  EXPECT_EQ(mine, "dst-load");
  EXPECT_EQ(mine_in_kernel, "dst-load");
  EXPECT_NE(ThisThreadName(), "dst-load");
}

TEST(ThreadName, LongNamesAreCutAtFifteenBytes) {
  std::string got;
  std::thread t([&] {
    NameThisThread("a-name-longer-than-the-kernel-keeps");
    got = ThisThreadName();
  });
  t.join();
  EXPECT_EQ(got, "a-name-longer-t");
  EXPECT_EQ(got.size(), kMaxThreadNameBytes);
}

}  // namespace
}  // namespace migd::base
