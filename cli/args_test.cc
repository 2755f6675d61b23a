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
  EXPECT_EQ(o->agent, "127.0.0.1:7070");
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
            "device:destination device)");
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=a:b,,c:d"}),
            "prepare: --devices: empty element in 'a:b,,c:d'");
  EXPECT_EQ(ErrorOf({"prepare", "--job=j", "--devices=a:"}),
            "prepare: --devices: 'a:' is not SRC:DST (source "
            "device:destination device)");
}

TEST(ParseArgs, JobArgumentCommands) {
  EXPECT_EQ(ErrorOf({"status"}), "status: missing JOB");
  EXPECT_EQ(ErrorOf({"watch", "a", "b"}), "watch: unexpected argument 'b'");
  auto o = ParseArgs({"cancel", "j-1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->job, "j-1");
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
            "usage: migctl [--agent=HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] prepare --job=J "
            "--devices=SRC:DST[,SRC:DST...] [--source=ID]");
  EXPECT_EQ(UsageLine(""),
            "usage: migctl [--agent=HOST:PORT] [--output=text|json] "
            "[--timeout=DURATION] COMMAND [ARGS]");
}

TEST(HelpText, SaysTheConnectionIsInsecureAndListsEveryCommand) {
  std::string help = HelpText();
  EXPECT_NE(help.find("INSECURE"), std::string::npos);
  for (const char* c :
       {"devices", "prepare", "migrate", "status", "watch", "cancel", "list"}) {
    EXPECT_NE(help.find(absl::StrCat("\n  ", c)), std::string::npos) << c;
  }
}

}  // namespace
}  // namespace migd::cli
