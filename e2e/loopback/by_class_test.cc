// PrepareIncoming by destination_class, with real agents on 127.0.0.1
// (mutual TLS) and emulated devices: the destination picks a free device of
// the class (agent_kind "emulated"), says which in the Migration record, and
// the migration lands there with the source's state; two jobs by class get
// two different devices; with none free the prepare is refused
// (FAILED_PRECONDITION, DEVICE_BUSY) naming every candidate and its job.
// The allocator path (a PCI class none of the configured devices has, bound
// and opened as a vfio device) needs a real kernel: the VM tier's;
// //migd/server:prepare_by_class_test covers it on a fake tree.

#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/status_macros.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::e2e {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

class ByClassTest : public AgentTest {
 protected:
  void SetUp() override {
    source_ = StartAgent("source", {},
                         "emulated src0 size=256KiB seed=1\n"
                         "emulated src1 size=256KiB seed=2\n"
                         "emulated src2 size=256KiB seed=5\n");
    ASSERT_NE(source_, nullptr);
    destination_ = StartAgent("destination", {},
                              "emulated d0 size=256KiB seed=3\n"
                              "emulated d1 size=256KiB seed=4\n");
    ASSERT_NE(destination_, nullptr);
  }

  // PrepareIncoming of `job` from source device `from` to a free emulated
  // device of the destination.
  grpc::Status PrepareByKind(const std::string& job, const std::string& from,
                             v1::PrepareIncomingResponse* response,
                             std::string* reason = nullptr) {
    v1::PrepareIncomingRequest request;
    request.set_job_id(job);
    v1::DevicePair* p = request.add_devices();
    p->set_source_device(from);
    p->mutable_destination_class()->set_agent_kind("emulated");
    request.set_source_identity(source_->identity());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    grpc::Status s =
        destination_->stub().PrepareIncoming(&context, request, response);
    if (reason != nullptr) *reason = ErrorReasonOf(context);
    return s;
  }
};

TEST_F(ByClassTest, MigratesIntoTheDevicePickedByClass) {
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  v1::PrepareIncomingResponse prepared;
  grpc::Status s = PrepareByKind("job-by-class", "src0", &prepared);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(prepared.migration().devices_size(), 1);
  const std::string picked = prepared.migration().devices(0).device();
  EXPECT_EQ(picked, "d0");  // the first free one, by name
  EXPECT_EQ(prepared.migration().devices(0).peer_device(), "src0");
  EXPECT_EQ(prepared.migration().devices(0).host_address(), "");  // emulated

  v1::StartMigrationRequest start;
  start.set_job_id("job-by-class");
  v1::DevicePair* p = start.add_devices();
  p->set_source_device("src0");
  p->set_destination_device(picked);
  start.set_destination(destination_->address());
  start.set_destination_identity(destination_->identity());
  start.set_transfer_token(prepared.transfer_token());
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    v1::Migration started;
    s = source_->stub().StartMigration(&context, start, &started);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  ASSERT_OK_AND_ASSIGN(v1::Migration source_end,
                       WaitForEnd(source_->stub(), "job-by-class", deadline));
  ASSERT_OK_AND_ASSIGN(
      v1::Migration destination_end,
      WaitForEnd(destination_->stub(), "job-by-class", deadline));
  EXPECT_EQ(v1::Phase_Name(source_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << source_end.ShortDebugString();
  EXPECT_EQ(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << destination_end.ShortDebugString();
  EXPECT_EQ(destination_end.devices(0).device(), picked);

  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  EXPECT_EQ(destination_after[picked].state_digest(),
            source_before["src0"].state_digest());
  EXPECT_NE(destination_after["d1"].state_digest(),
            source_before["src0"].state_digest());
}

TEST_F(ByClassTest, TwoJobsGetTwoDevicesAndAThirdIsRefusedNamingThem) {
  v1::PrepareIncomingResponse a, b, c;
  grpc::Status s = PrepareByKind("job-a", "src0", &a);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = PrepareByKind("job-b", "src1", &b);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(a.migration().devices(0).device(),
            b.migration().devices(0).device());

  std::string reason;
  s = PrepareByKind("job-c", "src2", &c, &reason);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_EQ(reason, "ERROR_REASON_DEVICE_BUSY");
  EXPECT_TRUE(absl::StrContains(s.error_message(),
                                "2 candidates, all held (d0 by job job-a, "
                                "d1 by job job-b)"))
      << s.error_message();
  // The refused job left nothing behind: its id is free.
  v1::GetMigrationRequest get;
  get.set_job_id("job-c");
  v1::Migration m;
  grpc::ClientContext context;
  EXPECT_EQ(destination_->stub().GetMigration(&context, get, &m).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace migd::e2e
