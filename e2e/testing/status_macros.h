// e2e/testing/status_macros.h
//
// ASSERT_OK_AND_ASSIGN(lhs, expr): evaluates an absl::StatusOr expression and
// assigns its value to `lhs` (a declaration or a variable), or fails the
// test with the expression and its status. For test bodies (it returns on
// failure, like every ASSERT_*).

#ifndef MIGD_E2E_TESTING_STATUS_MACROS_H_
#define MIGD_E2E_TESTING_STATUS_MACROS_H_

#include <utility>

#include "gtest/gtest.h"

#define MIGD_CONCAT_INNER(a, b) a##b
#define MIGD_CONCAT(a, b) MIGD_CONCAT_INNER(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                               \
  auto MIGD_CONCAT(status_or_, __LINE__) = (expr);                    \
  ASSERT_TRUE(MIGD_CONCAT(status_or_, __LINE__).ok())                 \
      << #expr << ": " << MIGD_CONCAT(status_or_, __LINE__).status(); \
  lhs = std::move(*MIGD_CONCAT(status_or_, __LINE__))

#endif  // MIGD_E2E_TESTING_STATUS_MACROS_H_
