#include "skiff/common/status.h"

#include <fcntl.h>

#include "gtest/gtest.h"
#include "skiff/common/log.h"
#include "skiff/common/unique_fd.h"

namespace skiff {
namespace {

absl::StatusOr<int> Half(int v) {
  if (v % 2) return absl::InvalidArgumentError("odd");
  return v / 2;
}

absl::Status Chain(int v, int* out) {
  ASSIGN_OR_RETURN(int h, Half(v));
  ASSIGN_OR_RETURN(*out, Half(h));
  RETURN_IF_ERROR(absl::OkStatus());
  return absl::OkStatus();
}

TEST(Status, AssignOrReturnPropagatesTheFirstError) {
  int out = 0;
  EXPECT_TRUE(Chain(8, &out).ok());
  EXPECT_EQ(out, 2);
  EXPECT_EQ(Chain(6, &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Status, ErrnoErrorNamesTheObjectAndMapsTheCode) {
  int fd = ::open("/nonexistent/skiff", O_RDONLY);
  ASSERT_LT(fd, 0);
  absl::Status st = LastErrnoError("open /nonexistent/skiff");
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(st.message().find("open /nonexistent/skiff"), std::string_view::npos);
  EXPECT_EQ(Annotate(st, "load config").code(), absl::StatusCode::kNotFound);
  EXPECT_NE(Annotate(st, "load config").message().find("load config: open"), std::string_view::npos);
}

TEST(UniqueFd, ClosesOnDestructionAndMoves) {
  int raw = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

TEST(Log, QuotesFieldsWithSpaces) {
  EXPECT_EQ(log::Field("pod", "web-1"), "pod=web-1");
  EXPECT_EQ(log::Field("msg", "a b"), "msg=\"a b\"");
  EXPECT_EQ(log::ParseLevel("WARN"), log::Level::kWarning);
}

}  // namespace
}  // namespace skiff
