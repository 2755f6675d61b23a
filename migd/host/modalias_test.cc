// migd/host/modalias_test.cc

#include "migd/host/modalias.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace migd::host {
namespace {

// An mlx5 ConnectX-5 VF.
constexpr char kMlx5Vf[] =
    "pci:v000015B3d0000101Esv000015B3sd00000080bc02sc00i00";

// What depmod writes, trimmed: other aliases, a comment, vfio_pci's
// catch-all, variant drivers.
constexpr char kAliases[] = R"(# Aliases extracted from modules themselves.
alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core
alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci
alias vfio_pci:v000015B3d0000101Fsv*sd*bc*sc*i* mlx5_vfio_pci
alias vfio_pci:v000019E5d0000A22Esv*sd*bc*sc*i* hisi_acc_vfio_pci
alias fs-vfat vfat

)";

std::vector<VfioPciAlias> Aliases(const std::string& text = kAliases) {
  absl::StatusOr<std::vector<VfioPciAlias>> a =
      ParseVfioPciAliases(text, "modules.alias");
  EXPECT_TRUE(a.ok()) << a.status();
  return a.value_or(std::vector<VfioPciAlias>{});
}

TEST(ParseVfioPciAliases, KeepsOnlyVfioPciAliasesInOrder) {
  std::vector<VfioPciAlias> a = Aliases();
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a[0].pattern, "vfio_pci:v*d*sv*sd*bc*sc*i*");
  EXPECT_EQ(a[0].module, "vfio_pci");
  EXPECT_EQ(a[1].module, "mlx5_vfio_pci");
  EXPECT_EQ(a[3].module, "hisi_acc_vfio_pci");
}

TEST(ParseVfioPciAliases, AMalformedAliasLineNamesTheFileAndLine) {
  absl::StatusOr<std::vector<VfioPciAlias>> a = ParseVfioPciAliases(
      "alias vfio_pci:v*d* vfio_pci\nalias vfio_pci:broken\n", "x.alias");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(a.status().message(), "x.alias:2"))
      << a.status();
}

TEST(ChooseVfioPciModule, TheMostSpecificAliasWins) {
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModule("0000:03:00.1", kMlx5Vf, Aliases());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "mlx5_vfio_pci");
  EXPECT_EQ(c->reason,
            "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* of mlx5_vfio_pci "
            "matches (5 wildcards)");
}

TEST(ChooseVfioPciModule, VfioPcisOwnCatchAllLosesToAnyVariant) {
  // The order in the file does not matter, only the wildcards.
  std::vector<VfioPciAlias> a = Aliases();
  std::reverse(a.begin(), a.end());
  EXPECT_EQ(ChooseVfioPciModule("d", kMlx5Vf, a)->module, "mlx5_vfio_pci");
}

TEST(ChooseVfioPciModule, NoVariantMeansVfioPcisCatchAll) {
  absl::StatusOr<VfioModuleChoice> c = ChooseVfioPciModule(
      "0000:00:04.0", "pci:v00001234d000011E8sv00001AF4sd00001100bc00sc00i00",
      Aliases());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "vfio_pci");
  EXPECT_EQ(c->reason,
            "alias vfio_pci:v*d*sv*sd*bc*sc*i* of vfio_pci matches (7 "
            "wildcards)");
}

TEST(ChooseVfioPciModule, NothingMatchingMeansPlainVfioPci) {
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModule("0000:00:04.0", kMlx5Vf, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "vfio_pci");
  EXPECT_EQ(c->reason, "no vfio_pci alias matches: vfio-pci");
}

TEST(ChooseVfioPciModule, TwoModulesAsSpecificAreAnErrorNamingBoth) {
  std::vector<VfioPciAlias> a = Aliases();
  a.push_back({"vfio_pci:v000015B3d*sv*sd*bc*sc*i*", "less_vfio_pci"});
  a.push_back({"vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*", "rival_vfio_pci"});
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModule("0000:03:00.1", kMlx5Vf, a);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* word :
       {"0000:03:00.1", "mlx5_vfio_pci", "rival_vfio_pci", "5 wildcards"}) {
    EXPECT_TRUE(absl::StrContains(c.status().message(), word))
        << word << ": " << c.status();
  }
}

TEST(ChooseVfioPciModule, OneModuleMatchingTwiceIsNoTie) {
  std::vector<VfioPciAlias> a = Aliases();
  // Three aliases of one module (one spelled with dashes), 4 wildcards each.
  a.push_back(
      {"vfio_pci:v000015B3d0000101Esv000015B3sd*bc*sc*i*", "mlx5_vfio_pci"});
  a.push_back(
      {"vfio_pci:v*d0000101Esv000015B3sd00000080bc*sc*i*", "mlx5-vfio-pci"});
  absl::StatusOr<VfioModuleChoice> c = ChooseVfioPciModule("d", kMlx5Vf, a);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "mlx5_vfio_pci");
}

TEST(ChooseVfioPciModule, QuestionMarksAndBracketsMatchAsFnmatchDoes) {
  std::vector<VfioPciAlias> a = Aliases();
  a.push_back({"vfio_pci:v000015B3d0000101[EF]sv*sd*bc??sc00i*", "bracket"});
  absl::StatusOr<VfioModuleChoice> c = ChooseVfioPciModule("d", kMlx5Vf, a);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "bracket");  // 3 wildcards beat 5
}

TEST(ChooseVfioPciModule, AnExplicitChoiceOverrides) {
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModule("d", kMlx5Vf, Aliases(), "vfio-pci");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "vfio_pci");
  EXPECT_EQ(c->reason, "chosen explicitly: vfio_pci");
  EXPECT_EQ(
      ChooseVfioPciModule("d", kMlx5Vf, Aliases(), "../evil").status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ChooseVfioPciModule,
     APreferenceWinsOverTheAliasesNotOverAnExplicitChoice) {
  const ModulePreference plain{"vfio-pci", "plugin p"};
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModule("d", kMlx5Vf, Aliases(), "", plain);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "vfio_pci");
  EXPECT_EQ(c->reason,
            "preferred by plugin p: alias vfio_pci:v*d*sv*sd*bc*sc*i* of "
            "vfio_pci matches");
  c = ChooseVfioPciModule("d", kMlx5Vf, Aliases(), "mlx5_vfio_pci", plain);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "mlx5_vfio_pci");
  EXPECT_EQ(c->reason, "chosen explicitly: mlx5_vfio_pci");
  // A module without vfio_pci aliases is taken on the plugin's word, as an
  // operator's is.
  c = ChooseVfioPciModule("d", kMlx5Vf, Aliases(), "",
                          ModulePreference{"pci_stub", "plugin p"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "pci_stub");
}

TEST(ChooseVfioPciModule, APreferenceThatDoesNotFitIsNoChoice) {
  for (const char* module : {"hisi_acc_vfio_pci", "../evil"}) {
    absl::StatusOr<VfioModuleChoice> c =
        ChooseVfioPciModule("0000:5e:00.1", kMlx5Vf, Aliases(), "",
                            ModulePreference{module, "plugin p"});
    EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition)
        << module;
    EXPECT_TRUE(absl::StrContains(c.status().message(),
                                  "device 0000:5e:00.1: plugin p prefers"))
        << c.status();
    EXPECT_TRUE(
        absl::StrContains(c.status().message(), "choose the driver explicitly"))
        << c.status();
  }
}

TEST(ChooseVfioPciModuleFor, AsksForThePreferenceOfTheDevice) {
  std::vector<std::string> asked;
  const ModulePreferenceFn prefer = [&](const std::string& bdf)
      -> absl::StatusOr<std::optional<ModulePreference>> {
    asked.push_back(bdf);
    if (bdf == "0000:5e:00.2") return std::nullopt;
    if (bdf == "0000:5e:00.3") return absl::InternalError("plugin p failed");
    return ModulePreference{"vfio_pci", "plugin p"};
  };
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModuleFor("0000:5e:00.1", kMlx5Vf, Aliases(), prefer);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "vfio_pci");
  // No preference: the aliases decide.
  c = ChooseVfioPciModuleFor("0000:5e:00.2", kMlx5Vf, Aliases(), prefer);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "mlx5_vfio_pci");
  c = ChooseVfioPciModuleFor("0000:5e:00.2", kMlx5Vf, Aliases(), nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "mlx5_vfio_pci");
  // A preference that cannot be told is no choice.
  c = ChooseVfioPciModuleFor("0000:5e:00.3", kMlx5Vf, Aliases(), prefer);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(c.status().message(), "plugin p failed"))
      << c.status();
  EXPECT_EQ(asked, (std::vector<std::string>{"0000:5e:00.1", "0000:5e:00.2",
                                             "0000:5e:00.3"}));
}

TEST(ChooseVfioPciModule, RefusesAModaliasOfAnotherBus) {
  absl::StatusOr<VfioModuleChoice> c =
      ChooseVfioPciModule("d", "of:NethernetT(null)", Aliases());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

// An NVMe VF as QEMU's nvme device makes it.
constexpr char kNvmeVf[] =
    "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";

TEST(CheckModuleFits, AVariantDriverFitsADeviceItsAliasMatches) {
  absl::StatusOr<std::string> why =
      CheckModuleFits("0000:03:00.1", kMlx5Vf, Aliases(), "mlx5-vfio-pci");
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_EQ(*why,
            "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* of mlx5_vfio_pci "
            "matches");
}

TEST(CheckModuleFits, AVariantDriverRefusesADeviceNoneOfItsAliasesMatch) {
  absl::StatusOr<std::string> why =
      CheckModuleFits("0000:03:00.1", kNvmeVf, Aliases(), "mlx5_vfio_pci");
  ASSERT_FALSE(why.ok());
  EXPECT_EQ(why.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* w :
       {"module mlx5_vfio_pci", "vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*",
        "vfio_pci:v000015B3d0000101Fsv*sd*bc*sc*i*", "device 0000:03:00.1",
        "ids 1b36:0010", kNvmeVf, "matches none"}) {
    EXPECT_TRUE(absl::StrContains(why.status().message(), w))
        << "missing \"" << w << "\": " << why.status();
  }
}

TEST(CheckModuleFits, VfioPcisCatchAllFitsEveryDevice) {
  absl::StatusOr<std::string> why =
      CheckModuleFits("0000:03:00.1", kNvmeVf, Aliases(), "vfio-pci");
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_TRUE(absl::StrContains(*why, "vfio_pci:v*d*sv*sd*bc*sc*i*")) << *why;
}

TEST(CheckModuleFits, AModuleWithoutVfioPciAliasesIsNotChecked) {
  absl::StatusOr<std::string> why =
      CheckModuleFits("0000:03:00.1", kNvmeVf, Aliases(), "pci_stub");
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_TRUE(absl::StrContains(*why, "no vfio_pci alias")) << *why;
}

TEST(CheckModuleFits, RefusesAModaliasOfAnotherBusAndABadModuleName) {
  EXPECT_EQ(
      CheckModuleFits("x", "usb:v1d2", Aliases(), "vfio_pci").status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckModuleFits("x", kNvmeVf, Aliases(), "../evil").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoadVfioPciAliases, ReadsTheReleasesFileBelowTheRoot) {
  const std::string root = absl::StrCat(getenv("TEST_TMPDIR"), "/aliasroot");
  const std::string dir = root + "/lib/modules/6.1.0-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/modules.alias") << kAliases;
  EXPECT_EQ(ModulesAliasPath(root, "6.1.0-test"), dir + "/modules.alias");
  absl::StatusOr<std::vector<VfioPciAlias>> a =
      LoadVfioPciAliases(root, "6.1.0-test");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->size(), 4u);

  absl::StatusOr<std::vector<VfioPciAlias>> missing =
      LoadVfioPciAliases(root, "9.9.9");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(),
                                root + "/lib/modules/9.9.9/modules.alias"));
}

TEST(ModulesAliasPath, DefaultsToTheRunningKernel) {
  EXPECT_TRUE(absl::StartsWith(ModulesAliasPath(""), "/lib/modules/"));
  EXPECT_FALSE(absl::StrContains(ModulesAliasPath(""), "//"));
}

}  // namespace
}  // namespace migd::host
