#include "migd/base/thread_name.h"

#include <pthread.h>

namespace migd::base {

void NameThisThread(std::string_view name) {
  std::string cut(name.substr(0, kMaxThreadNameBytes));
  // ERANGE is impossible after the cut; nothing else can fail for the
  // calling thread.
  (void)pthread_setname_np(pthread_self(), cut.c_str());
}

std::string ThisThreadName() {
  char buf[kMaxThreadNameBytes + 1] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof buf) != 0) return "";
  return buf;
}

}  // namespace migd::base
