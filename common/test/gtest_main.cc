// main() of every Skiff test binary (instead of gtest_main).
//
// GoogleTest reports every test of a suite whose SetUpTestSuite failed as
// "[  SKIPPED ]", and ctest turns any output with that mark into a skip: a
// control plane that never came up would make a whole suite look skipped,
// not failed. This printer wraps GoogleTest's own and reports those tests as
// FAILED (the binary already exits non-zero), so only the skips a test asks
// for (GTEST_SKIP, e.g. "needs root") show up as skips.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

namespace {

bool SuiteSetUpFailed(const testing::UnitTest& u, const char* suite) {
  for (int i = 0; i < u.total_test_suite_count(); ++i) {
    const testing::TestSuite* s = u.GetTestSuite(i);
    if (std::string(s->name()) == suite) return s->ad_hoc_test_result().Failed();
  }
  return false;
}

class Printer : public testing::TestEventListener {
 public:
  explicit Printer(testing::TestEventListener* inner) : inner_(inner) {}
  void OnTestProgramStart(const testing::UnitTest& u) override { inner_->OnTestProgramStart(u); }
  void OnTestIterationStart(const testing::UnitTest& u, int i) override { inner_->OnTestIterationStart(u, i); }
  void OnEnvironmentsSetUpStart(const testing::UnitTest& u) override { inner_->OnEnvironmentsSetUpStart(u); }
  void OnEnvironmentsSetUpEnd(const testing::UnitTest& u) override { inner_->OnEnvironmentsSetUpEnd(u); }
  void OnTestSuiteStart(const testing::TestSuite& s) override { inner_->OnTestSuiteStart(s); }
  void OnTestStart(const testing::TestInfo& t) override { inner_->OnTestStart(t); }
  void OnTestPartResult(const testing::TestPartResult& r) override { inner_->OnTestPartResult(r); }
  void OnTestEnd(const testing::TestInfo& t) override {
    if (t.result()->Skipped() && SuiteSetUpFailed(*testing::UnitTest::GetInstance(), t.test_suite_name())) {
      printf("[  FAILED  ] %s.%s: not run, SetUpTestSuite of %s failed (see above)\n", t.test_suite_name(), t.name(),
             t.test_suite_name());
      fflush(stdout);
      ++not_run_;
      return;
    }
    inner_->OnTestEnd(t);
  }
  void OnTestSuiteEnd(const testing::TestSuite& s) override { inner_->OnTestSuiteEnd(s); }
  void OnEnvironmentsTearDownStart(const testing::UnitTest& u) override { inner_->OnEnvironmentsTearDownStart(u); }
  void OnEnvironmentsTearDownEnd(const testing::UnitTest& u) override { inner_->OnEnvironmentsTearDownEnd(u); }
  void OnTestIterationEnd(const testing::UnitTest& u, int i) override {
    if (not_run_ == 0) {
      inner_->OnTestIterationEnd(u, i);
      return;
    }
    // GoogleTest's summary would list those tests under "[  SKIPPED ]".
    printf("[==========] %d tests ran; %d FAILED as their suite's SetUpTestSuite failed; %d failed on their own\n",
           u.test_to_run_count(), not_run_, u.failed_test_count());
    fflush(stdout);
  }
  void OnTestProgramEnd(const testing::UnitTest& u) override { inner_->OnTestProgramEnd(u); }

 private:
  std::unique_ptr<testing::TestEventListener> inner_;
  int not_run_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::TestEventListeners& l = testing::UnitTest::GetInstance()->listeners();
  if (testing::TestEventListener* dflt = l.default_result_printer()) {
    l.Release(dflt);
    l.Append(new Printer(dflt));
  }
  return RUN_ALL_TESTS();
}
