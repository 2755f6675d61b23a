// migd/metrics/http_test_util.h
//
// A plain HTTP GET on 127.0.0.1 and a free loopback port, for the tests that
// scrape /metrics: this package's server_test, and e2e/loopback's
// metrics_test, which also asks its Prometheus server's API. Test-only: no
// timeouts, no chunked encoding, the whole response read until the server
// closes the connection (HTTP/1.0).

#ifndef MIGD_METRICS_HTTP_TEST_UTIL_H_
#define MIGD_METRICS_HTTP_TEST_UTIL_H_

#include <string>

namespace migd::metrics::testing {

struct HttpResponse {
  // The status code; 0 when the connection failed or the answer was no HTTP
  // response.
  int code = 0;
  // What followed the headers.
  std::string body;
};

// GET http://127.0.0.1:<port><target> ("/metrics", "/api/v1/query?...").
HttpResponse HttpGet(int port, const std::string& target);

// A loopback port nothing listens on right now (bound, then released): for a
// server that must be told its port before it starts. 0 when none could be
// had.
int FreePort();

}  // namespace migd::metrics::testing

#endif  // MIGD_METRICS_HTTP_TEST_UTIL_H_
