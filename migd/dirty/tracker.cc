#include "migd/dirty/tracker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"

namespace migd::dirty {
namespace {

constexpr size_t kMaxRanges = 256;
constexpr uint64_t kMaxPages = uint64_t{1} << 28;

absl::Status Invalid(absl::string_view message) {
  return base::InvalidRequest(absl::StrCat("dirty_tracking: ", message));
}

size_t Words(uint64_t length, uint64_t page_size) {
  uint64_t pages = length / page_size;
  return static_cast<size_t>((pages + 63) / 64);
}

}  // namespace

absl::Status ValidateTracking(uint64_t page_size,
                              const std::vector<device::IovaRange>& ranges) {
  if (page_size < 4096 || (page_size & (page_size - 1)) != 0) {
    return Invalid(absl::StrCat("page_size ", page_size,
                                " is not a power of two >= 4096"));
  }
  if (ranges.empty()) return Invalid("no ranges");
  if (ranges.size() > kMaxRanges) {
    return Invalid(
        absl::StrCat(ranges.size(), " ranges; at most ", kMaxRanges));
  }
  std::vector<device::IovaRange> sorted = ranges;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.iova < b.iova; });
  uint64_t pages = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const device::IovaRange& r = sorted[i];
    if (r.length == 0 || r.iova % page_size != 0 || r.length % page_size != 0) {
      return Invalid(absl::StrCat(
          "range iova=0x", absl::Hex(r.iova), " length=0x", absl::Hex(r.length),
          " is empty or not aligned to page_size ", page_size));
    }
    if (r.iova + r.length < r.iova) {
      return Invalid(
          absl::StrCat("range iova=0x", absl::Hex(r.iova), " wraps around"));
    }
    if (i > 0 && sorted[i - 1].iova + sorted[i - 1].length > r.iova) {
      return Invalid(absl::StrCat("ranges at iova 0x",
                                  absl::Hex(sorted[i - 1].iova), " and 0x",
                                  absl::Hex(r.iova), " overlap"));
    }
    pages += r.length / page_size;
  }
  if (pages > kMaxPages) {
    return Invalid(absl::StrCat(pages, " pages; at most ", kMaxPages));
  }
  return absl::OkStatus();
}

Tracker::Tracker(std::vector<device::Device*> devices, uint64_t page_size,
                 std::vector<device::IovaRange> ranges)
    : devices_(std::move(devices)),
      page_size_(page_size),
      ranges_(std::move(ranges)) {
  absl::MutexLock lock(&mu_);
  logging_.assign(devices_.size(), false);
  unable_.assign(devices_.size(), false);
  for (size_t d = 0; d < devices_.size(); ++d) {
    for (size_t r = 0; r < ranges_.size(); ++r) {
      Slot s;
      s.device = d;
      s.range = r;
      s.bits.assign(Words(ranges_[r].length, page_size_), 0);
      slots_.push_back(std::move(s));
    }
  }
}

Tracker::~Tracker() { Stop(); }

void Tracker::MarkAllDirty(size_t device, const std::string& why) {
  if (!unable_[device]) {
    unable_[device] = true;
    std::string notice = absl::StrCat("device ", devices_[device]->name(),
                                      ": DMA dirty tracking unavailable (", why,
                                      "): every page is reported dirty");
    base::LogWarning(notice);
    notices_.push_back(std::move(notice));
  }
  for (Slot& s : slots_) {
    if (s.device == device) {
      s.all_dirty = true;
      s.pending = true;
    }
  }
}

absl::Status Tracker::Start() {
  absl::MutexLock lock(&mu_);
  for (size_t d = 0; d < devices_.size(); ++d) {
    absl::Status s = devices_[d]->StartDmaLogging(page_size_, ranges_);
    if (s.ok()) {
      logging_[d] = true;
    } else if (s.code() == absl::StatusCode::kInvalidArgument) {
      return s;  // our request is wrong: say so rather than track all-dirty
    } else {
      MarkAllDirty(d, std::string(s.message()));
    }
  }
  return absl::OkStatus();
}

void Tracker::Collect(uint32_t iteration, bool final) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  std::vector<uint64_t> bits;
  for (Slot& s : slots_) {
    if (unable_[s.device]) {
      s.pending = true;  // every iteration, every page
    } else if (logging_[s.device]) {
      const device::IovaRange& r = ranges_[s.range];
      absl::Status st = devices_[s.device]->ReportDmaLogging(r.iova, r.length,
                                                             page_size_, &bits);
      if (!st.ok()) {
        MarkAllDirty(s.device, std::string(st.message()));
      } else {
        bool any = false;
        for (size_t w = 0; w < s.bits.size() && w < bits.size(); ++w) {
          s.bits[w] |= bits[w];
          any = any || bits[w] != 0;
        }
        s.pending = s.pending || any;
      }
    }
    s.iteration = iteration;
    // The final collection is always delivered, so a consumer sees the end.
    if (final) {
      s.final = true;
      s.pending = true;
    }
  }
  if (final) closed_ = true;
}

void Tracker::Stop() {
  absl::MutexLock lock(&mu_);
  for (size_t d = 0; d < devices_.size(); ++d) {
    if (!logging_[d]) continue;
    logging_[d] = false;
    if (absl::Status s = devices_[d]->StopDmaLogging(); !s.ok()) {
      base::LogWarning("device ", devices_[d]->name(),
                       ": stopping DMA logging: ", s.ToString());
    }
  }
}

bool Tracker::Take(absl::Duration timeout, std::vector<v1::DirtyPages>* out) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_) return true;
    for (const Slot& s : slots_) {
      if (s.pending) return true;
    }
    return false;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  bool took = false;
  for (Slot& s : slots_) {
    if (!s.pending) continue;
    v1::DirtyPages p;
    p.set_device(devices_[s.device]->name());
    p.set_iova(ranges_[s.range].iova);
    p.set_length(ranges_[s.range].length);
    p.set_page_size(page_size_);
    p.set_iteration(s.iteration);
    p.set_final(s.final);
    p.set_all_dirty(s.all_dirty);
    if (!s.all_dirty) {
      std::string* bytes = p.mutable_bitmap();
      bytes->resize(s.bits.size() * 8);
      for (size_t w = 0; w < s.bits.size(); ++w) {
        for (int b = 0; b < 8; ++b) {
          (*bytes)[w * 8 + b] = static_cast<char>(s.bits[w] >> (8 * b));
        }
      }
    }
    std::fill(s.bits.begin(), s.bits.end(), 0);
    s.pending = false;
    out->push_back(std::move(p));
    took = true;
  }
  return took || !closed_;
}

void Tracker::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

std::vector<std::string> Tracker::notices() const {
  absl::MutexLock lock(&mu_);
  return notices_;
}

}  // namespace migd::dirty
