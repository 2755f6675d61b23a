#include "cli/args.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace migd::cli {
namespace {

// The usage error message for `args`, or "" when they parse.
std::string ErrorOf(const std::vector<std::string>& args) {
  auto o = ParseArgs(args);
  if (o.ok()) return "";
  EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(o.status().message());
}

TEST(ParseArgs, DefaultsForGlobalFlags) {
  auto o = ParseArgs({"devices"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "devices");
  EXPECT_EQ(o->agent, "");  // the config's default_agent, else 127.0.0.1:7070
  EXPECT_EQ(o->config, "");
  EXPECT_EQ(o->tls_cert, "");
  EXPECT_FALSE(o->insecure.has_value());
  EXPECT_EQ(o->output, OutputFormat::kText);
  EXPECT_EQ(o->timeout, absl::Seconds(30));
  EXPECT_FALSE(o->timeout_given);
}

TEST(ParseArgs, GlobalFlagsBeforeOrAfterTheCommandInBothForms) {
  auto o = ParseArgs({"--agent", "10.0.0.1:7070", "status", "job-1",
                      "--output=json", "--timeout", "2m"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "status");
  EXPECT_EQ(o->job, "job-1");
  EXPECT_EQ(o->agent, "10.0.0.1:7070");
  EXPECT_EQ(o->output, OutputFormat::kJson);
  EXPECT_EQ(o->timeout, absl::Minutes(2));
  EXPECT_TRUE(o->timeout_given);
}

TEST(ParseArgs, TlsFlagsAreGlobal) {
  auto o = ParseArgs({"--tls_cert=op.pem", "list", "--tls_key", "op.key",
                      "--tls_ca=ca.pem", "--agent_identity=spiffe://x/a",
                      "--config=/etc/migctl.conf"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->tls_cert, "op.pem");
  EXPECT_EQ(o->tls_key, "op.key");
  EXPECT_EQ(o->tls_ca, "ca.pem");
  EXPECT_EQ(o->agent_identity, "spiffe://x/a");
  EXPECT_EQ(o->config, "/etc/migctl.conf");
  EXPECT_FALSE(o->insecure.has_value());
}

TEST(ParseArgs, InsecureTakesNoValueButMayBeFalse) {
  auto o = ParseArgs({"--insecure", "list"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "list");
  EXPECT_EQ(o->insecure, true);
  o = ParseArgs({"list", "--insecure=false"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->insecure, false);
  EXPECT_EQ(ErrorOf({"--insecure=yes", "list"}),
            "--insecure: takes no value (or true/false), not 'yes'");
}

TEST(ParseArgs, IdentityFlagsOfPrepareAndMigrate) {
  auto o = ParseArgs({"prepare", "--job=j", "--devices=a:b",
                      "--source_identity=spiffe://x/src"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->source_identity, "spiffe://x/src");
  o = ParseArgs(
      {"prepare", "--job=j", "--devices=a:b", "--source_agent=10.0.0.5:7070"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->source_agent, "10.0.0.5:7070");
  o = ParseArgs({"migrate", "--job=j", "--devices=a:b", "--destination=dst",
                 "--destination_identity=spiffe://x/dst"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->destination, "dst");
  EXPECT_EQ(o->destination_identity, "spiffe://x/dst");
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=a:b",
                     "--source_identity=x", "--source_agent=h:1"}),
            "prepare: give --source_identity or --source_agent, not both");
  EXPECT_EQ(ErrorOf({"migrate", "--job=j", "--devices=a:b", "--destination=d",
                     "--source_identity=x"}),
            "migrate: unknown flag --source_identity");
}

TEST(ParseArgs, IdentityCommandTakesNoArguments) {
  auto o = ParseArgs({"identity", "--output=json"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "identity");
  EXPECT_EQ(ErrorOf({"identity", "extra"}),
            "identity: unexpected argument 'extra'");
}

TEST(ParseArgs, TimeoutAcceptsPlainSeconds) {
  auto o = ParseArgs({"--timeout=5", "list"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->timeout, absl::Seconds(5));
}

TEST(ParseArgs, MigrateWithAllFlags) {
  auto o = ParseArgs({"migrate", "--job=vm-7", "--devices=emu0:dst0,emu1:dst1",
                      "--destination=127.0.0.1:7071", "--token", "tok"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->job, "vm-7");
  EXPECT_EQ(o->destination, "127.0.0.1:7071");
  EXPECT_EQ(o->token, "tok");
  std::vector<DevicePairArg> want = {{"emu0", "dst0"}, {"emu1", "dst1"}};
  EXPECT_EQ(o->devices, want);
}

TEST(ParseArgs, MigrateWithoutPolicyFlagsLeavesTheAgentsDefaults) {
  auto o =
      ParseArgs({"migrate", "--job=j", "--devices=a:b", "--destination=h:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->policy, PolicyArgs());
}

TEST(ParseArgs, MigratePolicyFlags) {
  auto o = ParseArgs(
      {"migrate", "--job=j", "--devices=a:b", "--destination=h:1",
       "--downtime_limit=300ms", "--bandwidth=500MiB", "--max_iterations", "12",
       "--max_precopy_time=2m", "--on_no_convergence=fail", "--ack_timeout=15s",
       "--allow_mixed_p2p", "--no_precopy", "--chunk=256KiB",
       "--phase_timeout=1m30s", "--streams=4"});
  ASSERT_TRUE(o.ok()) << o.status();
  PolicyArgs want;
  want.downtime_limit = absl::Milliseconds(300);
  want.bandwidth = 500ull << 20;
  want.max_iterations = 12;
  want.max_precopy_time = absl::Minutes(2);
  want.fail_if_not_converged = true;
  want.ack_timeout = absl::Seconds(15);
  want.allow_mixed_p2p = true;
  want.no_precopy = true;
  want.chunk_bytes = 256 << 10;
  want.phase_timeout = absl::Seconds(90);
  want.streams = 4;
  EXPECT_EQ(o->policy, want);
}

TEST(ParseArgs, StreamsOutsideOneToSixteenIsAUsageError) {
  for (const char* bad : {"--streams=0", "--streams=17", "--streams=x"}) {
    auto o = ParseArgs(
        {"migrate", "--job=j", "--devices=a:b", "--destination=h:1", bad});
    EXPECT_FALSE(o.ok()) << bad;
    if (!o.ok()) {
      EXPECT_NE(o.status().message().find("--streams"), absl::string_view::npos)
          << o.status();
    }
  }
}

TEST(ParseArgs, BoolPolicyFlagsDoNotTakeTheNextArgument) {
  auto o = ParseArgs({"migrate", "--no_precopy", "--job=j", "--devices=a:b",
                      "--allow_mixed_p2p", "--destination=h:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->policy.no_precopy);
  EXPECT_TRUE(o->policy.allow_mixed_p2p);
  o = ParseArgs({"migrate", "--job=j", "--devices=a:b", "--destination=h:1",
                 "--no_precopy=false", "--allow_mixed_p2p=true"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->policy.no_precopy);
  EXPECT_TRUE(o->policy.allow_mixed_p2p);
}

TEST(ParseArgs, BandwidthTakesARateOrASize) {
  for (const char* value : {"500MiB/s", "500M", "524288000", "0.48828125GiB"}) {
    auto o =
        ParseArgs({"migrate", "--job=j", "--devices=a:b", "--destination=h:1",
                   absl::StrCat("--bandwidth=", value)});
    ASSERT_TRUE(o.ok()) << value << ": " << o.status();
    EXPECT_EQ(o->policy.bandwidth, 500ull << 20) << value;
  }
}

TEST(ParseArgs, OnNoConvergenceSwitchover) {
  auto o = ParseArgs({"migrate", "--job=j", "--devices=a:b",
                      "--destination=h:1", "--on_no_convergence=switchover"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->policy.fail_if_not_converged, false);
}

TEST(ParseArgs, BadPolicyValuesAreUsageErrorsNamingTheFlag) {
  auto err = [](const std::string& flag) {
    return ErrorOf(
        {"migrate", "--job=j", "--devices=a:b", "--destination=h:1", flag});
  };
  EXPECT_EQ(err("--downtime_limit=300"),
            "migrate: --downtime_limit: '300' needs a unit (e.g. 300ms, 2s, "
            "1m)");
  EXPECT_EQ(err("--downtime_limit=soon"),
            "migrate: --downtime_limit: 'soon' is not a duration (e.g. 300ms, "
            "2s, 1m)");
  EXPECT_EQ(err("--downtime_limit=0s"),
            "migrate: --downtime_limit: must be positive and finite, not '0s'");
  EXPECT_EQ(err("--max_precopy_time=-1s"),
            "migrate: --max_precopy_time: must be positive and finite, not "
            "'-1s'");
  EXPECT_EQ(err("--ack_timeout=inf"),
            "migrate: --ack_timeout: must be positive and finite, not 'inf'");
  EXPECT_EQ(err("--phase_timeout=5x"),
            "migrate: --phase_timeout: '5x' is not a duration (e.g. 300ms, 2s, "
            "1m)");
  EXPECT_EQ(err("--bandwidth=fast"),
            "migrate: --bandwidth: 'fast' is not a size (e.g. 4096, 512KiB, "
            "500MiB, 1.5GiB)");
  EXPECT_EQ(err("--bandwidth=500MB"),
            "migrate: --bandwidth: '500MB': MB is ambiguous; write MiB (powers "
            "of 1024) or plain bytes");
  EXPECT_EQ(err("--bandwidth=0"),
            "migrate: --bandwidth: must be at least 1 byte, not '0'");
  EXPECT_EQ(err("--max_iterations=0"),
            "migrate: --max_iterations: want a whole number from 1 to "
            "4294967295, not '0'");
  EXPECT_EQ(err("--max_iterations=-3"),
            "migrate: --max_iterations: want a whole number from 1 to "
            "4294967295, not '-3'");
  EXPECT_EQ(err("--max_iterations=4294967296"),
            "migrate: --max_iterations: want a whole number from 1 to "
            "4294967295, not '4294967296'");
  EXPECT_EQ(err("--on_no_convergence=retry"),
            "migrate: --on_no_convergence: must be switchover or fail, not "
            "'retry'");
  EXPECT_EQ(err("--chunk=2KiB"),
            "migrate: --chunk: must be from 4KiB to 8MiB, not '2KiB'");
  EXPECT_EQ(err("--chunk=16MiB"),
            "migrate: --chunk: must be from 4KiB to 8MiB, not '16MiB'");
  EXPECT_EQ(err("--no_precopy=yes"),
            "migrate: --no_precopy: takes no value (or true/false), not 'yes'");
  EXPECT_EQ(err("--downtime_limit"), "migrate: --downtime_limit needs a value");
}

TEST(ParseArgs, PolicyFlagsBelongToMigrate) {
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=a:b", "--no_precopy"}),
            "prepare: unknown flag --no_precopy");
  EXPECT_EQ(ErrorOf({"--downtime_limit=1s", "migrate"}),
            "--downtime_limit must come after the command");
}

TEST(ParseArgs, MigrateDirtyTrackingFlags) {
  auto o =
      ParseArgs({"migrate", "--job=j", "--devices=a:b", "--destination=h:1",
                 "--dirty_ranges=0x200000+1MiB,1073741824+0x10000",
                 "--dirty_page_size=4096"});
  ASSERT_TRUE(o.ok()) << o.status();
  std::vector<IovaRangeArg> want = {{0x200000, 1 << 20}, {1ull << 30, 0x10000}};
  EXPECT_EQ(o->dirty_ranges, want);
  EXPECT_EQ(o->dirty_page_size, 4096u);
}

TEST(ParseArgs, WithoutDirtyRangesNothingIsTracked) {
  auto o =
      ParseArgs({"migrate", "--job=j", "--devices=a:b", "--destination=h:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->dirty_ranges.empty());
  EXPECT_EQ(o->dirty_page_size, kDefaultDirtyPageSize);
}

TEST(ParseArgs, DirtyRangesAreCheckedAgainstTheGivenPageSize) {
  auto err = [](const std::string& ranges, const std::string& page) {
    std::vector<std::string> args = {"migrate", "--job=j", "--devices=a:b",
                                     "--destination=h:1",
                                     "--dirty_ranges=" + ranges};
    if (!page.empty()) args.push_back("--dirty_page_size=" + page);
    return ErrorOf(args);
  };
  EXPECT_EQ(err("0x200000+0x200000", "2MiB"), "");
  EXPECT_EQ(err("0x201000+0x1000", "2MiB"),
            "migrate: --dirty_ranges: '0x201000+0x1000' is not aligned to "
            "the 2097152-byte page");
  EXPECT_EQ(err("0+4096", "3000"),
            "migrate: --dirty_page_size: must be a power of two from 4KiB to "
            "1GiB, not '3000'");
  EXPECT_EQ(err("0+4096", "2KiB"),
            "migrate: --dirty_page_size: must be a power of two from 4KiB to "
            "1GiB, not '2KiB'");
  EXPECT_EQ(ErrorOf({"migrate", "--job=j", "--devices=a:b", "--destination=h:1",
                     "--dirty_page_size=4096"}),
            "migrate: --dirty_page_size needs --dirty_ranges");
}

TEST(ParseArgs, DirtyFlagsBelongToTheirCommands) {
  EXPECT_EQ(
      ErrorOf({"prepare", "--job=j", "--devices=a:b", "--dirty_ranges=0+4096"}),
      "prepare: unknown flag --dirty_ranges");
  EXPECT_EQ(ErrorOf({"watch", "j", "--wait"}), "watch: unknown flag --wait");
}

TEST(ParseArgs, DirtyPagesTakesAJobAndWait) {
  auto o = ParseArgs({"dirty-pages", "--wait", "vm-4"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "dirty-pages");
  EXPECT_EQ(o->job, "vm-4");
  EXPECT_TRUE(o->wait);
  o = ParseArgs({"dirty-pages", "vm-4"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->wait);
  EXPECT_EQ(ErrorOf({"dirty-pages"}), "dirty-pages: missing JOB");
  EXPECT_EQ(ErrorOf({"dirty-pages", "j", "--wait=maybe"}),
            "dirty-pages: --wait: takes no value (or true/false), not 'maybe'");
}

TEST(ParseDirtyRanges, HexDecimalAndSizes) {
  auto r =
      ParseDirtyRanges("0x0+0x1000,8192+4KiB,0X10000+1M,1GiB+0x200000", 4096);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<IovaRangeArg> want = {
      {0, 0x1000}, {8192, 4096}, {0x10000, 1 << 20}, {1ull << 30, 0x200000}};
  EXPECT_EQ(*r, want);
  r = ParseDirtyRanges("0+4096", 4096);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->front(), (IovaRangeArg{0, 4096}));
}

TEST(ParseDirtyRanges, RefusalsNameTheElement) {
  auto err = [](absl::string_view text) {
    return std::string(ParseDirtyRanges(text, 4096).status().message());
  };
  EXPECT_EQ(err(""), "--dirty_ranges: empty (want IOVA+LEN,...)");
  EXPECT_EQ(err("0+4096,,8192+4096"),
            "--dirty_ranges: empty element in '0+4096,,8192+4096'");
  EXPECT_EQ(err("0x1000"),
            "--dirty_ranges: '0x1000' is not IOVA+LEN (e.g. 0x200000+1MiB)");
  EXPECT_EQ(err("0x1000+"),
            "--dirty_ranges: '0x1000+' is not IOVA+LEN (e.g. 0x200000+1MiB)");
  EXPECT_EQ(err("1+2+3"),
            "--dirty_ranges: '1+2+3' is not IOVA+LEN (e.g. 0x200000+1MiB)");
  EXPECT_EQ(err("0xg000+4096"),
            "--dirty_ranges: '0xg000+4096': IOVA '0xg000' is not a hex "
            "number");
  EXPECT_EQ(err("0x+4096"),
            "--dirty_ranges: '0x+4096': IOVA '0x' is not a hex number");
  EXPECT_EQ(err("0x10000000000000000+4096"),
            "--dirty_ranges: '0x10000000000000000+4096': IOVA "
            "'0x10000000000000000' is too large");
  EXPECT_EQ(err("0x1000+0"),
            "--dirty_ranges: '0x1000+0': length must be at least 1 byte, not "
            "'0'");
  EXPECT_EQ(err("0x1000+0x0"),
            "--dirty_ranges: '0x1000+0x0': length must be at least 1 byte, not "
            "'0x0'");
  EXPECT_EQ(err("4096+lots"),
            "--dirty_ranges: '4096+lots': length 'lots' is not a size (e.g. "
            "4096, 512KiB, 500MiB, 1.5GiB)");
  EXPECT_EQ(err("0x1800+4096"),
            "--dirty_ranges: '0x1800+4096' is not aligned to the 4096-byte "
            "page");
  EXPECT_EQ(err("0xfffffffffffff000+0x2000"),
            "--dirty_ranges: '0xfffffffffffff000+0x2000' wraps around the "
            "IOVA space");
  EXPECT_EQ(err("0x200000+1MiB,0x2ff000+0x2000"),
            "--dirty_ranges: ranges at 0x200000 and 0x2ff000 overlap");
}

TEST(ParseDirtyRanges, TheLastPageOfTheIovaSpaceFits) {
  auto r = ParseDirtyRanges("0xfffffffffffff000+0x1000", 4096);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->front().iova, 0xfffffffffffff000u);
}

TEST(ParseDirtyPageSize, PowersOfTwoFrom4KiB) {
  EXPECT_EQ(ParseDirtyPageSize("4096").value(), 4096u);
  EXPECT_EQ(ParseDirtyPageSize("0x200000").value(), 2u << 20);
  EXPECT_EQ(ParseDirtyPageSize("1GiB").value(), 1u << 30);
  EXPECT_FALSE(ParseDirtyPageSize("2GiB").ok());
  EXPECT_FALSE(ParseDirtyPageSize("0").ok());
  EXPECT_FALSE(ParseDirtyPageSize("6KiB").ok());
}

TEST(ParseByteSize, UnitsAndFractions) {
  EXPECT_EQ(ParseByteSize("4096").value(), 4096u);
  EXPECT_EQ(ParseByteSize("4096B").value(), 4096u);
  EXPECT_EQ(ParseByteSize("4k").value(), 4096u);
  EXPECT_EQ(ParseByteSize("4KiB").value(), 4096u);
  EXPECT_EQ(ParseByteSize("1.5GiB").value(), 3ull << 29);
  EXPECT_EQ(ParseByteSize("2T").value(), 2ull << 40);
  EXPECT_EQ(ParseByteSize("0.5K").value(), 512u);
}

TEST(ParseByteSize, Refusals) {
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("MiB").ok());
  EXPECT_FALSE(ParseByteSize("1.MiB").ok());
  EXPECT_FALSE(ParseByteSize(".5MiB").ok());
  EXPECT_FALSE(ParseByteSize("-1").ok());
  EXPECT_FALSE(ParseByteSize("1.5").ok());  // half a byte
  EXPECT_FALSE(ParseByteSize("1 MiB").ok());
  EXPECT_EQ(ParseByteSize("5PiB").status().message(),
            "'5PiB': unknown unit 'PiB' (want B, K/KiB, M/MiB, G/GiB or "
            "T/TiB)");
  EXPECT_EQ(ParseByteSize("99999999999999999999").status().message(),
            "'99999999999999999999' is too large");
  EXPECT_EQ(ParseByteSize("16777216T").status().message(),
            "'16777216T' is too large");
}

TEST(ParsePolicyDuration, UnitsRequired) {
  EXPECT_EQ(ParsePolicyDuration("300ms").value(), absl::Milliseconds(300));
  EXPECT_EQ(ParsePolicyDuration("1h30m").value(), absl::Minutes(90));
  EXPECT_EQ(ParsePolicyDuration("1.5s").value(), absl::Milliseconds(1500));
  EXPECT_FALSE(ParsePolicyDuration("30").ok());
  EXPECT_FALSE(ParsePolicyDuration("0").ok());
  EXPECT_FALSE(ParsePolicyDuration("").ok());
  EXPECT_EQ(ParsePolicyDuration("100000000h").status().message(),
            "'100000000h' is too long");
}

TEST(ParseArgs, PrepareWithSource) {
  auto o = ParseArgs(
      {"prepare", "--job=j", "--devices=emu0:dst0", "--source=host-a"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->source, "host-a");
}

TEST(ParseArgs, HelpNeedsNoCommand) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"-h"}, {"help"}, {"migrate", "--help"}}) {
    auto o = ParseArgs(args);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_TRUE(o->help);
  }
}

TEST(ParseArgs, MissingCommand) {
  EXPECT_EQ(ErrorOf({}), "missing command");
  EXPECT_EQ(ErrorOf({"--agent=x:1"}), "missing command");
}

TEST(ParseArgs, UnknownCommandIsNamed) {
  EXPECT_EQ(ErrorOf({"frobnicate"}), "unknown command 'frobnicate'");
}

TEST(ParseArgs, UnknownCommandIsNotReportedAsTheCommand) {
  std::string command = "unset";
  EXPECT_FALSE(ParseArgs({"frobnicate"}, &command).ok());
  EXPECT_EQ(command, "unset");
}

TEST(ParseArgs, MissingRequiredFlagsAreNamed) {
  EXPECT_EQ(ErrorOf({"prepare", "--devices=a:b"}), "prepare: missing --job");
  EXPECT_EQ(ErrorOf({"prepare", "--job=j"}), "prepare: missing --devices");
  EXPECT_EQ(ErrorOf({"migrate", "--job=j", "--devices=a:b"}),
            "migrate: missing --destination");
}

TEST(ParseArgs, ReportsTheCommandForItsUsageLine) {
  std::string command;
  EXPECT_FALSE(ParseArgs({"migrate", "--job=j"}, &command).ok());
  EXPECT_EQ(command, "migrate");
}

TEST(ParseArgs, MalformedDevicesNameTheBadElement) {
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=emu0"}),
            "prepare: --devices: 'emu0' is not SRC:DST (source "
            "device:destination device, or SRC:CLASS with CLASS "
            "pci:VVVV:DDDD, mdev:TYPE[@PARENT] or kind:KIND)");
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=a:b,,c:d"}),
            "prepare: --devices: empty element in 'a:b,,c:d'");
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=a:"}),
            "prepare: --devices: 'a:' is not SRC:DST (source "
            "device:destination device, or SRC:CLASS with CLASS "
            "pci:VVVV:DDDD, mdev:TYPE[@PARENT] or kind:KIND)");
}

TEST(ParseArgs, JobArgumentCommands) {
  EXPECT_EQ(ErrorOf({"status"}), "status: missing JOB");
  EXPECT_EQ(ErrorOf({"watch", "a", "b"}), "watch: unexpected argument 'b'");
  auto o = ParseArgs({"cancel", "j-1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->job, "j-1");
}

TEST(ParseArgs, ResolveTakesAJobAndWhereTheDevicesRun) {
  for (const char* where : {"source", "destination"}) {
    auto o = ParseArgs({"resolve", "j-1", absl::StrCat("--outcome=", where)});
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(o->command, "resolve");
    EXPECT_EQ(o->job, "j-1");
    EXPECT_EQ(o->outcome, where);
  }
}

TEST(ParseArgs, ResolveWithoutOrWithABadOutcomeIsAUsageError) {
  EXPECT_EQ(ErrorOf({"resolve", "j-1"}), "resolve: missing --outcome");
  EXPECT_EQ(ErrorOf({"resolve", "--outcome=source"}), "resolve: missing JOB");
  EXPECT_EQ(ErrorOf({"resolve", "j-1", "--outcome=both"}),
            "resolve: --outcome must be source or destination, not 'both'");
  EXPECT_EQ(ErrorOf({"cancel", "j-1", "--outcome=source"}),
            "cancel: unknown flag --outcome");
}

TEST(ParseArgs, InvalidJobId) {
  EXPECT_EQ(ErrorOf({"status", "a b"}),
            "status: 'a b' is not a valid job id ([A-Za-z0-9._-], 1..64 "
            "characters)");
  EXPECT_EQ(ErrorOf({"prepare", "--job", std::string(65, 'x'), "--devices=a:b"})
                .substr(0, 9),
            "prepare: ");
}

TEST(ParseArgs, FlagErrors) {
  EXPECT_EQ(ErrorOf({"devices", "--job=j"}), "devices: unknown flag --job");
  EXPECT_EQ(ErrorOf({"--job=j", "prepare"}),
            "--job must come after the command");
  EXPECT_EQ(ErrorOf({"--frob", "devices"}), "unknown flag --frob");
  EXPECT_EQ(ErrorOf({"devices", "--agent"}), "--agent needs a value");
  EXPECT_EQ(ErrorOf({"devices", "--agent="}), "--agent needs a value");
  EXPECT_EQ(ErrorOf({"prepare", "--job=a", "--job=b", "--devices=a:b"}),
            "prepare: --job given twice");
  EXPECT_EQ(ErrorOf({"devices", "--output=yaml"}),
            "--output must be text or json, not 'yaml'");
  EXPECT_EQ(ErrorOf({"devices", "--timeout=soon"}),
            "--timeout: 'soon' is not a duration (e.g. 30s, 500ms, 2m)");
  EXPECT_EQ(ErrorOf({"devices", "--timeout=0s"}),
            "--timeout must be positive and finite, not '0s'");
  EXPECT_EQ(ErrorOf({"devices", "extra"}),
            "devices: unexpected argument 'extra'");
}

TEST(ParseArgs, CheckTakesMigratesDevicesAndDestination) {
  auto o = ParseArgs({"check", "--devices=emu0:dst0,0000:3b:00.1:emu9",
                      "--destination", "dst",
                      "--destination_identity=spiffe://x/agent/b"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "check");
  std::vector<DevicePairArg> want = {{"emu0", "dst0"},
                                     {"0000:3b:00.1", "emu9"}};
  EXPECT_EQ(o->devices, want);
  EXPECT_EQ(o->destination, "dst");
  EXPECT_EQ(o->destination_identity, "spiffe://x/agent/b");
}

TEST(ParseArgs, CheckNeedsDevicesAndADestinationAndNothingOfAJob) {
  EXPECT_EQ(ErrorOf({"check", "--destination=d:1"}),
            "check: missing --devices");
  EXPECT_EQ(ErrorOf({"check", "--devices=a:b"}),
            "check: missing --destination");
  EXPECT_EQ(ErrorOf({"check", "--devices=a:b", "--destination=d:1", "--job=j"}),
            "check: unknown flag --job");
  EXPECT_EQ(
      ErrorOf({"check", "--devices=a:b", "--destination=d:1", "--token=t"}),
      "check: unknown flag --token");
  EXPECT_EQ(ErrorOf({"check", "--devices=a:b", "--destination=d:1",
                     "--downtime_limit=1s"}),
            "check: unknown flag --downtime_limit");
  EXPECT_EQ(ErrorOf({"check", "--devices=a:b,a:c", "--destination=d:1"}),
            "check: --devices: source device 'a' listed twice");
}

TEST(ParseArgs, PluginsTakesAnOptionalAgent) {
  auto o = ParseArgs({"plugins"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "plugins");
  EXPECT_EQ(o->agent, "");
  o = ParseArgs({"plugins", "host6", "--output=json"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->agent, "host6");
  EXPECT_EQ(o->output, OutputFormat::kJson);
  o = ParseArgs({"--agent=10.0.0.6:7070", "plugins"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->agent, "10.0.0.6:7070");
  EXPECT_EQ(ErrorOf({"plugins", "a", "b"}), "plugins: unexpected argument 'b'");
  EXPECT_EQ(ErrorOf({"--agent=a:1", "plugins", "b"}),
            "plugins: give AGENT or --agent, not both");
  EXPECT_EQ(ErrorOf({"list", "a"}), "list: unexpected argument 'a'");
}

TEST(ParseArgs, HostCommandsTakeTheirArgumentsAndFlags) {
  auto o = ParseArgs({"host", "status", "0000:03:00.1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "host status");
  EXPECT_EQ(o->args, std::vector<std::string>{"0000:03:00.1"});

  o = ParseArgs({"--output=json", "host", "bind", "0000:03:00.1", "--driver",
                 "mlx5_vfio_pci"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "host bind");
  EXPECT_EQ(o->driver, "mlx5_vfio_pci");
  EXPECT_EQ(o->output, OutputFormat::kJson);

  o = ParseArgs({"host", "unbind", "--to_no_driver", "0000:03:00.1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->to_no_driver);
  EXPECT_EQ(o->args, std::vector<std::string>{"0000:03:00.1"});

  o = ParseArgs({"host", "vfs", "0000:07:00.0", "0"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->vf_count, 0u);

  o = ParseArgs({"host", "mdev-create", "mbochs", "mbochs-small",
                 "--uuid=0b2a4d1e-1111-4222-8333-444455556666"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->args, (std::vector<std::string>{"mbochs", "mbochs-small"}));
  EXPECT_EQ(o->uuid, "0b2a4d1e-1111-4222-8333-444455556666");
}

TEST(ParseArgs, HostVfTokenTakesThePf) {
  absl::StatusOr<Options> o = ParseArgs({"host", "vf-token", "0000:07:00.0"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "host vf-token");
  EXPECT_EQ(o->args, std::vector<std::string>{"0000:07:00.0"});
  EXPECT_EQ(ErrorOf({"host", "vf-token"}), "host vf-token: missing PF");
}

TEST(ParseArgs, HostUsageErrors) {
  EXPECT_EQ(
      ErrorOf({"host"}),
      "host: missing the host command (status, bind, unbind, vfs, "
      "vf-token, mdev-types, mdev-create, mdev-remove, allocate, release, "
      "allocations)");
  EXPECT_EQ(
      ErrorOf({"host", "rebind", "x"}),
      "host: unknown host command 'rebind' (status, bind, unbind, vfs, "
      "vf-token, mdev-types, mdev-create, mdev-remove, allocate, release, "
      "allocations)");
  EXPECT_EQ(ErrorOf({"host", "bind"}), "host bind: missing ADDRESS");
  EXPECT_EQ(ErrorOf({"host", "vfs", "0000:07:00.0", "4294967296"}),
            "host vfs: COUNT '4294967296' is not a whole number of VFs");
  EXPECT_EQ(ErrorOf({"host", "unbind", "a", "--driver=vfio_pci"}),
            "host unbind: unknown flag --driver");
  EXPECT_EQ(ErrorOf({"host", "--driver=vfio_pci", "bind", "a"}),
            "--driver must come after the command");
  EXPECT_EQ(ErrorOf({"host", "mdev-remove", "a", "b"}),
            "host mdev-remove: unexpected argument 'b'");
}

TEST(ParseDevicePairs, PlainNames) {
  auto pairs = ParseDevicePairs("emu0:dst0,emu1:dst1");
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  std::vector<DevicePairArg> want = {{"emu0", "dst0"}, {"emu1", "dst1"}};
  EXPECT_EQ(*pairs, want);
}

TEST(ParseDevicePairs, PciAddressesOnEitherSide) {
  auto pairs = ParseDevicePairs(
      "0000:3b:00.1:0000:5e:00.2,3b:00.3:emu9,emu8:0000:af:1f.7");
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  std::vector<DevicePairArg> want = {{"0000:3b:00.1", "0000:5e:00.2"},
                                     {"3b:00.3", "emu9"},
                                     {"emu8", "0000:af:1f.7"}};
  EXPECT_EQ(*pairs, want);
}

TEST(ParseDevicePairs, RejectsDuplicates) {
  EXPECT_EQ(ParseDevicePairs("a:b,a:c").status().message(),
            "--devices: source device 'a' listed twice");
  EXPECT_EQ(ParseDevicePairs("a:b,c:b").status().message(),
            "--devices: destination device 'b' listed twice");
}

TEST(ParseDevicePairs, RejectsEmptyAndUnsplittable) {
  EXPECT_FALSE(ParseDevicePairs("").ok());
  EXPECT_FALSE(ParseDevicePairs("a:b:c").ok());
  EXPECT_FALSE(ParseDevicePairs(":b").ok());
}

TEST(ParseDevicePairs, DestinationClasses) {
  auto pairs = ParseDevicePairs(
      "edu0:pci:1234:11e8,0000:3b:00.1:pci:15b3:101e:15b3:0042,"
      "gpu:mdev:mbochs-small@mbochs,emu0:kind:emulated,emu1:kind:emulated");
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 5u);
  EXPECT_EQ((*pairs)[0],
            (DevicePairArg{"edu0", "", {"1234:11e8", "", "", ""}}));
  EXPECT_EQ(
      (*pairs)[1],
      (DevicePairArg{"0000:3b:00.1", "", {"15b3:101e:15b3:0042", "", "", ""}}));
  EXPECT_EQ((*pairs)[2],
            (DevicePairArg{"gpu", "", {"", "mbochs-small", "mbochs", ""}}));
  // Two devices of one class is no duplicate.
  EXPECT_EQ((*pairs)[3], (DevicePairArg{"emu0", "", {"", "", "", "emulated"}}));
  EXPECT_EQ((*pairs)[4], (DevicePairArg{"emu1", "", {"", "", "", "emulated"}}));
}

TEST(ParseDevicePairs, RejectsMalformedClasses) {
  EXPECT_EQ(ParseDevicePairs("edu0:pci:").status().message(),
            "--devices: 'pci:': the PCI ids after pci: are empty");
  EXPECT_EQ(ParseDevicePairs("gpu:mdev:@mbochs").status().message(),
            "--devices: 'mdev:@mbochs': the mdev TYPE is empty");
  EXPECT_EQ(ParseDevicePairs("gpu:mdev:t@").status().message(),
            "--devices: 'mdev:t@': the PARENT after @ is empty");
  EXPECT_EQ(ParseDevicePairs("emu0:kind:").status().message(),
            "--devices: 'kind:': the KIND after kind: is empty");
  EXPECT_EQ(ParseDevicePairs("a:b,a:pci:1234:11e8").status().message(),
            "--devices: source device 'a' listed twice");
}

TEST(ParseArgs, DestinationClassOnlyWhereAPrepareIsMade) {
  auto o = ParseArgs({"migrate", "--job=j", "--devices=edu0:pci:1234:11e8",
                      "--destination=d:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->devices[0].destination_class.pci_ids, "1234:11e8");
  o = ParseArgs({"prepare", "--job=j", "--devices=e:mdev:t",
                 "--source_identity=spiffe://x/a"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->devices[0].destination_class.mdev_type, "t");
  EXPECT_EQ(ParseArgs({"migrate", "--job=j", "--devices=edu0:pci:1234:11e8",
                       "--destination=d:1", "--token=t"})
                .status()
                .message(),
            "migrate: --devices: 'edu0': a destination class is picked by the "
            "prepare that migrate makes without --token; with --token name "
            "the prepared devices");
  EXPECT_EQ(
      ParseArgs({"check", "--devices=edu0:kind:vfio", "--destination=d:1"})
          .status()
          .message(),
      "check: --devices: 'edu0': check needs the destination device by "
      "name, not a class");
}

TEST(IsPciAddress, FullAndShortForms) {
  EXPECT_TRUE(IsPciAddress("0000:3b:00.1"));
  EXPECT_TRUE(IsPciAddress("3b:00.7"));
  EXPECT_FALSE(IsPciAddress("3b:00.8"));
  EXPECT_FALSE(IsPciAddress("0000:3b:00"));
  EXPECT_FALSE(IsPciAddress("emu0"));
  EXPECT_FALSE(IsPciAddress("zz:00.1"));
}

TEST(UsageLine, NamesTheCommandSynopsis) {
  EXPECT_EQ(UsageLine("prepare"),
            "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] [TLS FLAGS] prepare --job=J "
            "--devices=SRC:DST[,SRC:DST...] [--source=TEXT] "
            "[--source_identity=ID | --source_agent=AGENT]");
  EXPECT_EQ(UsageLine(""),
            "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] [TLS FLAGS] COMMAND [ARGS]");
}

TEST(UsageLine, CheckAndPlugins) {
  EXPECT_EQ(UsageLine("check"),
            "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] [TLS FLAGS] check "
            "--devices=SRC:DST[,SRC:DST...] --destination=NAME|HOST:PORT "
            "[--destination_identity=ID]");
  EXPECT_EQ(UsageLine("plugins"),
            "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] [TLS FLAGS] plugins [AGENT]");
}

TEST(UsageLine, HostCommands) {
  EXPECT_EQ(UsageLine("host bind"),
            "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] [TLS FLAGS] host bind ADDRESS "
            "[--driver=MODULE]");
  EXPECT_EQ(UsageLine("host"),
            "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] [TLS FLAGS] host "
            "status|bind|unbind|vfs|vf-token|mdev-types|mdev-create|"
            "mdev-remove|"
            "allocate|release|allocations ARGS");
}

TEST(ParseArgs, HostAllocateTakesAnOwnerAndKeyClassPairs) {
  auto o = ParseArgs({"host", "allocate", "dom-1", "0000:3b:02.0=pci:15b3:101e",
                      "k2=mdev:mbochs-small", "k3=mdev:mbochs-small@mbochs",
                      "--driver=vfio_pci"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->command, "host allocate");
  EXPECT_EQ(o->args, std::vector<std::string>{"dom-1"});
  EXPECT_EQ(o->driver, "vfio_pci");
  ASSERT_EQ(o->allocate.size(), 3u);
  EXPECT_EQ(o->allocate[0], (AllocateArg{"0000:3b:02.0", "15b3:101e", "", ""}));
  EXPECT_EQ(o->allocate[1], (AllocateArg{"k2", "", "mbochs-small", ""}));
  EXPECT_EQ(o->allocate[2], (AllocateArg{"k3", "", "mbochs-small", "mbochs"}));

  o = ParseArgs({"host", "release", "dom-1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->args, std::vector<std::string>{"dom-1"});
  o = ParseArgs({"host", "allocations"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->args.empty());
  o = ParseArgs({"host", "allocations", "dom-1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->args, std::vector<std::string>{"dom-1"});
}

TEST(ParseArgs, HostAllocateUsageErrors) {
  EXPECT_EQ(ErrorOf({"host", "allocate"}), "host allocate: missing OWNER");
  EXPECT_EQ(ErrorOf({"host", "allocate", "dom-1"}),
            "host allocate: missing KEY=CLASS");
  EXPECT_EQ(ErrorOf({"host", "allocate", "dom-1", "k"}),
            "host allocate: 'k' is not KEY=CLASS (CLASS: "
            "pci:VVVV:DDDD[:SVVV:SDDD], mdev:TYPE or mdev:TYPE@PARENT)");
  EXPECT_EQ(ErrorOf({"host", "allocate", "dom-1", "k=usb:1"}),
            "host allocate: 'k=usb:1': CLASS must be "
            "pci:VVVV:DDDD[:SVVV:SDDD], mdev:TYPE or mdev:TYPE@PARENT");
  EXPECT_EQ(ErrorOf({"host", "allocate", "dom-1", "k=mdev:t@"}),
            "host allocate: 'k=mdev:t@': the PARENT after @ is empty");
  EXPECT_EQ(ErrorOf({"host", "release"}), "host release: missing OWNER");
  EXPECT_EQ(ErrorOf({"host", "allocations", "a", "b"}),
            "host allocations: unexpected argument 'b'");
}

TEST(HelpText, DocumentsTheExitStatusOfABlockedCheck) {
  std::string help = HelpText();
  EXPECT_NE(help.find("3 check found a device that cannot migrate"),
            std::string::npos);
  EXPECT_NE(help.find("Exit 0 when every device can migrate, 3"),
            std::string::npos);
}

TEST(UsageLine, MigrateMentionsThePolicyFlags) {
  EXPECT_NE(UsageLine("migrate").find("[--token=T] [POLICY FLAGS]"),
            std::string::npos);
}

TEST(HelpText, DescribesEveryPolicyFlag) {
  std::string help = HelpText();
  for (const char* f :
       {"--downtime_limit=", "--bandwidth=", "--max_iterations=",
        "--max_precopy_time=", "--on_no_convergence=", "--ack_timeout=",
        "--allow_mixed_p2p", "--no_precopy", "--chunk=", "--phase_timeout=",
        "--dirty_ranges=", "--dirty_page_size="}) {
    EXPECT_NE(help.find(absl::StrCat("\n  ", f)), std::string::npos) << f;
  }
}

TEST(HelpText, DescribesTheTlsFlagsAndTheirEnvironmentVariables) {
  std::string help = HelpText();
  for (const char* f : {"--tls_cert=", "--tls_key=", "--tls_ca=",
                        "--agent_identity=", "--insecure", "--config="}) {
    EXPECT_NE(help.find(absl::StrCat("\n  ", f)), std::string::npos) << f;
  }
  for (const char* v : {"MIGCTL_TLS_CERT", "MIGCTL_TLS_KEY", "MIGCTL_TLS_CA",
                        "MIGCTL_INSECURE=1", "MIGCTL_CONFIG",
                        "~/.config/migctl/config", "[agent src]"}) {
    EXPECT_NE(help.find(v), std::string::npos) << v;
  }
}

TEST(HelpText, SaysTheConnectionIsMutualTlsAndListsEveryCommand) {
  std::string help = HelpText();
  EXPECT_NE(help.find("mutual TLS"), std::string::npos);
  for (const char* c : {"devices",          "prepare",
                        "migrate",          "check",
                        "status",           "watch",
                        "dirty-pages",      "cancel",
                        "resolve",          "list",
                        "plugins",          "identity",
                        "host status",      "host bind",
                        "host unbind",      "host vfs",
                        "host mdev-types",  "host mdev-create",
                        "host mdev-remove", "host allocate",
                        "host release",     "host allocations"}) {
    EXPECT_NE(help.find(absl::StrCat("\n  ", c)), std::string::npos) << c;
  }
}

}  // namespace
}  // namespace migd::cli
