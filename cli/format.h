// cli/format.h
//
// How migctl shows things to a person and to a program: human byte, rate and
// duration strings, short names for the API's enums, the device and job tables,
// the end-of-job summary, the migratability report of a dry run, the plugin
// list, what `identity` found, and JSON of any API message.
// Pure functions of their inputs, so the output a script parses is pinned by
// tests.

#ifndef MIGD_CLI_FORMAT_H_
#define MIGD_CLI_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "migd/security/tls_files.h"
#include "proto/migd/v1/host.pb.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {

// "0 B", "1023 B", "1.0 KiB", "32.0 MiB", "1.5 GiB" (binary units, one decimal
// from KiB up).
std::string HumanBytes(uint64_t bytes);

// HumanBytes(rate) + "/s"; "-" for a negative, NaN or infinite rate.
std::string HumanRate(double bytes_per_second);

// Compact and human: "0s", "<1us", "850us", "12ms", "1.25s", "42.0s", "2m05s",
// "1h02m". Negative durations get a leading "-"; infinite ones are "inf".
std::string HumanDuration(absl::Duration d);

// "80.0/96.0 MiB" when both print in the same unit, "512.0 KiB/96.0 MiB"
// otherwise; HumanBytes(done) alone when total is 0.
std::string HumanBytesPair(uint64_t done, uint64_t total);

// Percent of done/total as "42%", clamped to 0..100; "--%" when total is 0.
std::string FormatPercent(uint64_t done, uint64_t total);

// Enum value names without their prefix: "RUNNING", "STOP_COPY", "SOURCE",
// "BAD_TOKEN". Unknown values come out as their number.
std::string DeviceStateName(migd::v1::DeviceState state);
std::string PhaseName(migd::v1::Phase phase);
std::string RoleName(migd::v1::Role role);
std::string ReasonName(migd::v1::ErrorReason reason);

// VFIO_MIGRATION_* bits as "STOP_COPY|P2P|PRE_COPY" (unknown bits as hex);
// "-" when none.
std::string MigrationFlagsString(uint64_t flags);

// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(migd::v1::Phase phase);

absl::Duration ToAbslDuration(const google::protobuf::Duration& d);
absl::Time ToAbslTime(const google::protobuf::Timestamp& t);

// "2025-06-01T10:00:00Z" (UTC, whole seconds).
std::string FormatUtcTime(absl::Time t);

// Left-aligned columns separated by two spaces, one line per row (each ending
// in '\n'), no trailing spaces. `rows` includes the header row.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// NAME KIND STATE FLAGS JOB SIZE DIGEST, one row per device.
std::string FormatDevicesTable(const migd::v1::ListDevicesResponse& response);

// JOB ROLE PHASE PEER PROGRESS DEVICES, one row per job.
std::string FormatMigrationsTable(
    const migd::v1::ListMigrationsResponse& response);

// A few lines on one job for `migctl status`: phase, role, peer (and its
// certificate identity when the job has one); for a job IN_DOUBT why, how
// often the destination was asked and what it said, and what to do (the
// `migctl resolve` lines), for one that was, how it was settled; bytes,
// timings, pre-copy (iterations, the live estimate, pre-copy and stop-copy
// bytes), downtime with its breakdown, failure, notices, and one line per
// device (with its pre-copy/stop-copy split and downtime share when known).
std::string FormatMigrationDetails(const migd::v1::Migration& m);

// The summary migctl prints once a job ended: outcome, bytes, time,
// throughput, pre-copy (FormatPrecopySummary), downtime with its breakdown,
// failure, notices and each device's state and bytes.
std::string FormatSummary(const migd::v1::Migration& m);

// Where the downtime went: "41ms (stop-copy 12ms, load 28ms, resume 1ms)".
// The parts are the ones `b` has; the total is b.total, else `total` when
// given. Just the parts when there is no total, "" when there is nothing.
std::string FormatDowntimeBreakdown(
    const migd::v1::DowntimeBreakdown& b,
    const google::protobuf::Duration* total = nullptr);

// The job's downtime with its breakdown when the job has one
// (FormatDowntimeBreakdown), the total alone without, "-" when not known.
std::string FormatDowntime(const migd::v1::Migration& m);

// How pre-copy went or is going: "3 iterations, converged", "1 iteration,
// not converged yet", "30 iterations, did not converge; switched over
// anyway", ...; "" when the job reports no pre-copy progress.
std::string FormatPrecopyOutcome(const migd::v1::Migration& m);

// Pre-copy in one line: "3 iterations, converged; 90.1 MiB pre-copy,
// 6.0 MiB stop-copy". The iterations part only when the job reports pre-copy
// progress (the source); "" for a job without pre-copy.
std::string FormatPrecopySummary(const migd::v1::Migration& m);

// The live pre-copy estimate: "16.0 MiB left, expected downtime 12ms,
// dirty 4.0 MiB/s, bandwidth 300.0 MiB/s" (unknown parts left out).
std::string FormatPrecopyEstimate(const migd::v1::PrecopyProgress& p);

// The IOVA of every page `p` reports dirty, ascending: the set bits of its
// bitmap (bit n is the page at iova + n * page_size), or every page of the
// range when all_dirty is set. Bits past the range are ignored.
std::vector<uint64_t> DirtyPageAddresses(const migd::v1::DirtyPages& p);

// One line for `migctl dirty-pages`, without the newline:
// "device=edu0 iteration=2 final=false all_dirty=false
// range=0x200000+0x100000 page_size=4096 dirty=2 pages=0x200000,0x203000";
// "pages=-" when none is dirty, "pages=all" (and dirty = the pages of the
// range) when all_dirty is set.
std::string FormatDirtyPages(const migd::v1::DirtyPages& p);

// What keeps a device from migrating, in words: "no migration support",
// "incompatible", "device busy", "no such device", "mixed P2P support",
// "destination unreachable", "plugin conflict"; "blocked" for a kind this
// build does not know.
std::string BlockerKindWords(migd::v1::MigrationBlocker::Kind kind);

// One blocker in one line, without the newline: "destination, incompatible:
// MESSAGE; format: source 2, destination 1; remedy: REMEDY". The field part
// only when the blocker names a field, the remedy only when there is one.
std::string FormatBlocker(const migd::v1::MigrationBlocker& b);

// `migctl check`'s report on a dry run toward the destination shown as
// `destination`: a header line ("MIGRATABLE: 2 devices to dst:1 (identity
// ID); bandwidth 300.0 MiB/s, predicted downtime 28ms", or "BLOCKED: 1 of 2
// devices cannot migrate to ..."), then per device "SRC -> DST  migratable"
// or "... BLOCKED" and indented lines: the plugin and its summary on each
// side, the stop-copy size, and one FormatBlocker line per blocker.
std::string FormatCheckReport(const migd::v1::CheckMigrationResponse& r,
                              const std::string& destination);

// `migctl plugins`: where the plugins were read from, a NAME VERSION ABI
// DEVICES PATH DESCRIPTION table of the loaded ones, then "Failed to load:"
// with "  PATH: REASON" lines and "Conflicts:" with one line each (the two
// sections only when not empty).
std::string FormatPlugins(const migd::v1::ListPluginsResponse& r);

// `migctl host status` (and what bind, unbind and vfs print after their
// outcome line): one "key: value" line per fact, in this order, so a script
// can pick one with sed:
//   address, bus, ids ("15b3:101e"), subsystem, class ("0x020000"),
//   driver and driver_override ("(none)" when none), modalias,
//   vfio_module, vfio_driver ("(not loaded)" until its module is) and
//   vfio_choice, or vfio_choice_error when migd cannot choose,
//   iommu_group ("(none)"), group_viable ("yes", or "no: WHY"), in_use,
//   bound_by_migd ("no", or "yes: to D; unbind returns it to O with
//   driver_override V"),
//   agent_device and job (when the agent manages the device),
//   sriov_totalvfs, sriov_numvfs and "vf: N ADDRESS" per VF (a PF),
//   physfn ("ADDRESS vf N", a VF),
//   "mdev_type: ID available=N api=API name=NAME" and "mdev: UUID TYPE"
//   (an mdev parent), "notice: ..." per notice.
std::string FormatHostDevice(const migd::v1::HostDevice& d);

// `migctl host mdev-types`: "parent: P", a TYPE AVAILABLE API NAME table,
// then "instances:" with a UUID TYPE table, or "instances: none".
std::string FormatMdevTypes(const migd::v1::ListMdevTypesResponse& r);

// `migctl host allocate`, `release`, `allocations`: an OWNER KEY DEVICE
// DRIVER table, one row per device (DEVICE: the PCI address or the mdev
// UUID; DRIVER: the PCI driver, or "mdev TYPE on PARENT"); `none` (e.g.
// "no allocations") alone on its line when there are none.
std::string FormatAllocations(
    const google::protobuf::RepeatedPtrField<migd::v1::AllocatedDevice>& d,
    absl::string_view none);

// What `migctl identity` learned about one agent and this client.
struct IdentityReport {
  std::string name;               // as the command line named the agent
  std::string agent;              // how to show it: "src (10.0.0.5:7070)"
  std::string address;            // HOST:PORT
  bool tls = false;               // false: plaintext
  std::string insecure_from;      // what asked for plaintext ("--insecure")
  std::string expected_identity;  // what the channel required; "" = host name
  security::CertificateInfo server;  // the agent's certificate, when tls
  std::string client_certificate;    // path of this client's certificate
  security::CertificateInfo client;  // what it says
};

// Labelled lines: agent, connection, then the agent's identity, subject,
// serial, not before, not after, and the same of the client's certificate
// ("client identity", ...) and its path. For plaintext, agent and connection
// only, saying that there is no identity.
std::string FormatIdentity(const IdentityReport& r);

// The same as one indented JSON object: agent, address, tls,
// expected_identity, identity, subject, serial, not_before, not_after (RFC
// 3339) and client {certificate, identity, subject, serial, not_before,
// not_after}; for plaintext agent, address, tls (false) and an empty
// identity.
std::string IdentityJson(const IdentityReport& r);

// Proto3 JSON with the .proto field names (snake_case), fields at their
// default values included, enums by name. One line when `compact`, indented
// otherwise. Never empty: a conversion failure yields a JSON object with an
// "error" member.
std::string ToJson(const google::protobuf::Message& message, bool compact);

}  // namespace migd::cli

#endif  // MIGD_CLI_FORMAT_H_
