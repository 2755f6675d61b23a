#include "migd/migration/transfer_gate.h"

#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace migd::migration {

struct TransferGate::Line {
  explicit Line(uint32_t limit) : limit(limit) {}

  // A turn not done yet: waiting, or given a slot it has not taken.
  struct Place {
    bool granted = false;
    bool left = false;
    absl::Status why;  // when left
  };

  bool Free() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return limit == 0 || held < limit;
  }

  // Turns waiting ahead of `number`.
  size_t Ahead(uint64_t number) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    size_t n = 0;
    for (const auto& [k, place] : places) {
      if (k >= number) break;
      if (!place.granted && !place.left) ++n;
    }
    return n;
  }

  size_t Waiting() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    size_t n = 0;
    for (const auto& [k, place] : places) {
      if (!place.granted && !place.left) ++n;
    }
    return n;
  }

  // Gives free slots to the first turns waiting, in order.
  void Admit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (auto& [k, place] : places) {
      if (!Free()) return;
      if (place.granted || place.left) continue;
      place.granted = true;
      ++held;
    }
  }

  void Give() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    --held;
    Admit();
  }

  const uint32_t limit;
  mutable absl::Mutex mu;
  uint32_t held ABSL_GUARDED_BY(mu) = 0;  // with the granted, not yet taken
  uint64_t next ABSL_GUARDED_BY(mu) = 0;
  std::map<uint64_t, Place> places ABSL_GUARDED_BY(mu);  // by arrival
};

TransferGate::Slot& TransferGate::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Reset();
    line_ = std::move(other.line_);
  }
  return *this;
}

void TransferGate::Slot::Reset() {
  if (line_ == nullptr) return;
  line_->Give();
  line_.reset();
}

TransferGate::Turn::Turn(std::shared_ptr<Line> line) : line_(std::move(line)) {}

TransferGate::Turn::~Turn() {
  absl::MutexLock lock(&line_->mu);
  auto it = line_->places.find(number_);
  if (it == line_->places.end()) return;  // Wait returned
  const bool granted = it->second.granted;
  line_->places.erase(it);
  if (granted) --line_->held;  // a slot never taken goes back
  line_->Admit();
}

absl::StatusOr<TransferGate::Slot> TransferGate::Turn::Wait(
    absl::FunctionRef<void(size_t)> ahead) {
  Line& line = *line_;
  line.mu.Lock();
  size_t shown = ~size_t{0};
  for (;;) {
    Line::Place& place = line.places.at(number_);
    if (place.left) {
      absl::Status why = place.why;
      line.places.erase(number_);
      line.mu.Unlock();
      return why;
    }
    if (place.granted) {
      line.places.erase(number_);  // the slot stays counted in `held`
      line.mu.Unlock();
      return Slot(line_);
    }
    const size_t now = line.Ahead(number_);
    if (now != shown) {
      shown = now;
      line.mu.Unlock();
      ahead(now);
      line.mu.Lock();
      continue;
    }
    struct Args {
      Line* line;
      uint64_t number;
      size_t shown;
    } args{&line, number_, shown};
    line.mu.Await(absl::Condition(
        +[](Args* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          const Line::Place& p = a->line->places.at(a->number);
          return p.left || p.granted || a->line->Ahead(a->number) != a->shown;
        },
        &args));
  }
}

void TransferGate::Turn::Leave(absl::Status why) {
  if (why.ok()) why = absl::CancelledError("left the line");
  absl::MutexLock lock(&line_->mu);
  auto it = line_->places.find(number_);
  if (it == line_->places.end() || it->second.left) return;
  Line::Place& place = it->second;
  place.left = true;
  place.why = std::move(why);
  if (place.granted) {
    // Given a slot it has not taken: the slot goes to the next turn.
    place.granted = false;
    --line_->held;
  }
  line_->Admit();
}

size_t TransferGate::Turn::ahead() const {
  absl::MutexLock lock(&line_->mu);
  auto it = line_->places.find(number_);
  if (it == line_->places.end() || it->second.granted) return 0;
  return line_->Ahead(number_);
}

TransferGate::TransferGate(uint32_t limit)
    : line_(std::make_shared<Line>(limit)) {}

uint32_t TransferGate::limit() const { return line_->limit; }

std::optional<TransferGate::Slot> TransferGate::TryTake() {
  absl::MutexLock lock(&line_->mu);
  if (!line_->Free() || line_->Waiting() != 0) return std::nullopt;
  ++line_->held;
  return Slot(line_);
}

std::unique_ptr<TransferGate::Turn> TransferGate::Join() {
  std::unique_ptr<Turn> turn(new Turn(line_));
  absl::MutexLock lock(&line_->mu);
  turn->number_ = line_->next++;
  line_->places.emplace(turn->number_, Line::Place{});
  line_->Admit();
  return turn;
}

size_t TransferGate::waiting() const {
  absl::MutexLock lock(&line_->mu);
  return line_->Waiting();
}

size_t TransferGate::held() const {
  absl::MutexLock lock(&line_->mu);
  return line_->held;
}

}  // namespace migd::migration
