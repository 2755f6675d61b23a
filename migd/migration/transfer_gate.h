// migd/migration/transfer_gate.h
//
// How many of an agent's source jobs move state at once (the agent's
// --max_concurrent_migrations). A job takes a slot before it opens its
// transfer session and gives it back once its data path is over. When no
// slot is free it waits in line, first come first served, and takes the
// first slot given back.
//
// Why a line: jobs started together share the host's CPUs, caches and link.
// Past a few, the whole moves no faster while each job moves slower, and a
// pre-copy job that moves slower converges later, if at all. Their rates also
// spread: the first and the last jobs of a batch run among fewer others than
// the rest. In line, the jobs that run keep their share and each gets about
// the same one; a job's place in line only delays its start.
//
// Thread-safe. Slots and turns may outlive the gate.

#ifndef MIGD_MIGRATION_TRANSFER_GATE_H_
#define MIGD_MIGRATION_TRANSFER_GATE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace migd::migration {

class TransferGate {
 public:
  struct Line;  // what the gate, its slots and its turns share

  // A slot, held until destroyed or reset.
  class Slot {
   public:
    Slot() = default;
    ~Slot() { Reset(); }
    Slot(Slot&& other) noexcept : line_(std::move(other.line_)) {}
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

    bool held() const { return line_ != nullptr; }
    // Gives the slot back (the next turn in line takes it); a no-op when
    // not held.
    void Reset();

   private:
    friend class TransferGate;
    explicit Slot(std::shared_ptr<Line> line) : line_(std::move(line)) {}
    std::shared_ptr<Line> line_;
  };

  // A place in line, from Join until it takes its slot or leaves. Leaving
  // the line is destroying the turn, or Leave.
  class Turn {
   public:
    ~Turn();
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

    // Waits for this turn's slot. Calls `ahead` with the number of turns
    // ahead of this one, first with the number now and again whenever it
    // changes (on this thread, with no lock held). Returns the slot, or the
    // status Leave was given (before or during the wait). One Wait per turn.
    absl::StatusOr<Slot> Wait(absl::FunctionRef<void(size_t)> ahead);

    // Leaves the line with `why` (not OK): a Wait returns it, now or when it
    // is called. A no-op once Wait returned a slot. Thread-safe; may be
    // called under any lock but the gate's own.
    void Leave(absl::Status why);

    // Turns waiting ahead of this one now (0 once given a slot, or gone).
    size_t ahead() const;

   private:
    friend class TransferGate;
    explicit Turn(std::shared_ptr<Line> line);
    std::shared_ptr<Line> line_;
    uint64_t number_ = 0;  // place in line, by arrival
  };

  // At most `limit` slots held at once; 0 means no limit (every job takes
  // a slot at once).
  explicit TransferGate(uint32_t limit);

  TransferGate(const TransferGate&) = delete;
  TransferGate& operator=(const TransferGate&) = delete;

  uint32_t limit() const;

  // A slot now, when one is free and no turn waits for one (a job that
  // arrives later never passes one that waits).
  std::optional<Slot> TryTake();

  // Joins the end of the line.
  std::unique_ptr<Turn> Join();

  // Turns waiting in line, and slots held, now.
  size_t waiting() const;
  size_t held() const;

 private:
  std::shared_ptr<Line> line_;
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_TRANSFER_GATE_H_
