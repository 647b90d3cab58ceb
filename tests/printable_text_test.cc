// EscapeNonPrintable (framework/core/printable_text.h): what reaches a terminal from an error
// message that quotes bytes of a file.
#include "framework/core/printable_text.h"

#include <string>

#include "gtest/gtest.h"

namespace fam {
namespace {

TEST(PrintableTextTest, KeepsPrintableAsciiAndWellFormedUtf8) {
  EXPECT_EQ(EscapeNonPrintable("plain ASCII: a-z 0-9 {}[]\\\"'~"),
            "plain ASCII: a-z 0-9 {}[]\\\"'~");
  const std::string utf8 =
      "caf\xc3\xa9 \xe5\x9c\xa3\xe7\xbb\x8f \xf0\x9f\x99\x82";  // café 圣经 🙂
  EXPECT_EQ(EscapeNonPrintable(utf8), utf8);
}

TEST(PrintableTextTest, EscapesControlsAndKeepsOneLine) {
  EXPECT_EQ(EscapeNonPrintable("a\nb\tc\rd"), "a\\nb\\tc\\rd");
  EXPECT_EQ(EscapeNonPrintable(std::string("\x1b[31mred\x7f\x00z", 11)), "\\x1b[31mred\\x7f\\x00z");
}

TEST(PrintableTextTest, EscapesBytesThatAreNotUtf8) {
  EXPECT_EQ(EscapeNonPrintable("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(EscapeNonPrintable("\xc3"), "\\xc3");                             // truncated sequence
  EXPECT_EQ(EscapeNonPrintable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(EscapeNonPrintable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a UTF-16 surrogate
  EXPECT_EQ(EscapeNonPrintable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(EscapeNonPrintable("ok\xe2\x82"), "ok\\xe2\\x82");
}

TEST(PrintableTextTest, EscapesInvisibleControlCodePoints) {
  EXPECT_EQ(EscapeNonPrintable("\xc2\x85"), "\\xc2\\x85");               // NEL (C1)
  EXPECT_EQ(EscapeNonPrintable("a\xe2\x80\xaez"), "a\\xe2\\x80\\xaez");  // right-to-left override
  EXPECT_EQ(EscapeNonPrintable("\xe2\x80\xa8"), "\\xe2\\x80\\xa8");      // line separator
  EXPECT_EQ(EscapeNonPrintable("\xef\xbb\xbfx"), "\\xef\\xbb\\xbfx");    // byte-order mark
}

}  // namespace
}  // namespace fam
