#include "migd/migration/commit.h"

namespace migd::migration {

std::string LocalEndName(LocalEnd end) {
  switch (end) {
    case LocalEnd::kRunHere:
      return "RUN_HERE";
    case LocalEnd::kRunThere:
      return "RUN_THERE";
    case LocalEnd::kStayInDoubt:
      return "STAY_IN_DOUBT";
  }
  return "?";
}

LocalEnd SourceEnd(bool committed, v1::Outcome destination_says) {
  if (!committed) {
    // The destination never got COMMIT, so it never runs the devices; one
    // that says it does contradicts the protocol, and guessing could run
    // the VM twice.
    return destination_says == v1::OUTCOME_RUNNING_HERE
               ? LocalEnd::kStayInDoubt
               : LocalEnd::kRunHere;
  }
  switch (destination_says) {
    case v1::OUTCOME_RUNNING_HERE:
      return LocalEnd::kRunThere;
    case v1::OUTCOME_NOT_RUN:
      return LocalEnd::kRunHere;
    default:
      return LocalEnd::kStayInDoubt;
  }
}

LocalEnd OperatorEnd(v1::Role role, v1::Resolution resolution) {
  if (resolution != v1::RESOLUTION_SOURCE &&
      resolution != v1::RESOLUTION_DESTINATION) {
    return LocalEnd::kStayInDoubt;
  }
  const bool to_source = resolution == v1::RESOLUTION_SOURCE;
  switch (role) {
    case v1::ROLE_SOURCE:
      return to_source ? LocalEnd::kRunHere : LocalEnd::kRunThere;
    case v1::ROLE_DESTINATION:
      return to_source ? LocalEnd::kRunThere : LocalEnd::kRunHere;
    default:
      return LocalEnd::kStayInDoubt;
  }
}

DestinationAnswer AnswerFor(v1::Phase phase) {
  switch (phase) {
    case v1::PHASE_SUCCEEDED:
    case v1::PHASE_RESUMING:
      return {v1::OUTCOME_RUNNING_HERE, false};
    case v1::PHASE_FAILED:
    case v1::PHASE_CANCELLED:
      return {v1::OUTCOME_NOT_RUN, false};
    case v1::PHASE_IN_DOUBT:
      return {v1::OUTCOME_UNKNOWN, false};
    default:
      return {v1::OUTCOME_NOT_RUN, true};
  }
}

std::string OutcomeName(v1::Outcome outcome) {
  std::string name = v1::Outcome_Name(outcome);
  if (name.empty()) return std::to_string(static_cast<int>(outcome));
  return name.rfind("OUTCOME_", 0) == 0 ? name.substr(8) : name;
}

}  // namespace migd::migration
