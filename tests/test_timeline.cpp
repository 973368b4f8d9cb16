/// @brief Timeline (core/timeline.hpp): the statistics on hand-made events with known answers,
/// the recording switch, JSON quoting, and the per-rank JSON read back by a strict check of its
/// structure. The trace of a real run is checked by tests/timeline (ctest `timeline`).
#include <gtest/gtest.h>

#include <string>

#include "firetrain/core/timeline.hpp"

namespace ft {
namespace {

using Ph = Timeline::Ph;

// One step: [0, 100] us; forward [10, 30]; backward [30, 80]; wait [80, 90];
// buckets in flight [40, 60], [50, 70] (overlapping: union [40, 70]) and [85, 95] (after
// backward); reducer.ready spans of 2 and 3 us inside backward.
void one_step(Timeline& t, int64_t s, double off) {
  t.set_step(s);
  t.span("step", "step", off + 0, off + 100);
  t.span("phase", "forward", off + 10, off + 30);
  t.span("phase", "backward", off + 30, off + 80);
  t.span("phase", "allreduce wait", off + 80, off + 90);
  t.async_begin("allreduce", "bucket 0", 0, off + 40);
  t.async_begin("allreduce", "bucket 1", 1, off + 50);
  t.async_end("allreduce", "bucket 0", 0, off + 60);
  t.async_end("allreduce", "bucket 1", 1, off + 70);
  t.async_begin("allreduce", "bucket 2", 2, off + 85);
  t.async_end("allreduce", "bucket 2", 2, off + 95);
  t.span("comm", "reducer.ready", off + 40, off + 42);
  t.span("comm", "reducer.ready", off + 50, off + 53);
}

TEST(Timeline, StatsOnKnownEvents) {
  Timeline t(0);
  t.set_recording(true);
  one_step(t, 7, 0);
  one_step(t, 8, 1000);
  const TimelineStats s = timeline_stats(t.events());
  EXPECT_EQ(s.steps, 2);
  EXPECT_DOUBLE_EQ(s.step_ms, 0.1);
  EXPECT_DOUBLE_EQ(s.forward_ms, 0.02);
  EXPECT_DOUBLE_EQ(s.backward_ms, 0.05);
  EXPECT_DOUBLE_EQ(s.wait_ms, 0.01);
  EXPECT_DOUBLE_EQ(s.ready_ms, 0.005);
  // In flight: union [40, 70] (30 us) + [85, 95] (10 us) = 40 us; inside backward [30, 80]: 30.
  EXPECT_DOUBLE_EQ(s.comm_ms, 0.04);
  EXPECT_DOUBLE_EQ(s.in_backward, 0.75);
}

TEST(Timeline, MediansOverStepsAndNoBuckets) {
  Timeline t(0);
  t.set_recording(true);
  for (int s = 0; s < 3; ++s) {
    t.set_step(s);
    const double len = s == 1 ? 500 : 100 + s;  // 100, 500, 102: median 102
    t.span("step", "step", 1000.0 * s, 1000.0 * s + len);
  }
  const TimelineStats st = timeline_stats(t.events());
  EXPECT_EQ(st.steps, 3);
  EXPECT_DOUBLE_EQ(st.step_ms, 0.102);
  EXPECT_EQ(st.comm_ms, 0);
  EXPECT_EQ(st.in_backward, 0);  // nothing in flight (one rank)
}

TEST(Timeline, RecordsOnlyWhileRecording) {
  Timeline t(3);
  t.span("phase", "x", 0, 1);
  t.async_begin("allreduce", "b", 0, 0);
  {
    TimelineScope sc(&t, "phase", "scoped");
  }
  EXPECT_TRUE(t.events().empty());
  t.set_recording(true);
  {
    TimelineScope sc(&t, "phase", "scoped");
  }
  TimelineScope none(nullptr, "phase", "nothing");  // a null timeline is allowed
  ASSERT_EQ(t.events().size(), 1u);
  EXPECT_EQ(t.events()[0].name, "scoped");
  EXPECT_GE(t.events()[0].dur, 0);
  // Spans never have a negative duration, even with clocks read out of order.
  t.span("phase", "reversed", 10, 5);
  EXPECT_EQ(t.events().back().dur, 0);
}

TEST(Timeline, JsonQuoteEscapes) {
  EXPECT_EQ(json_quote("fire2 (features.3)"), "\"fire2 (features.3)\"");
  EXPECT_EQ(json_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json_quote(std::string("x\ny\tz\x01", 6)), "\"x\\u000ay\\u0009z\\u0001\"");
}

TEST(Timeline, JsonHasOneObjectPerEventAndTheRankAsPid) {
  Timeline t(5);
  t.set_recording(true);
  t.set_step(2);
  t.span("forward", "conv\"1", 1.5, 2.25, "\"k\":1");
  t.async_begin("allreduce", "bucket 0", 0, 3, "\"bytes\":4");
  t.async_end("allreduce", "bucket 0", 0, 4);
  const std::string j = t.to_json("rank 5 (host)");
  // Three metadata objects and three events, separated by ",\n"; the async id carries the
  // rank in its high 32 bits (5 << 32 = 21474836480): ids are global across processes.
  size_t objects = 1, pos = 0;
  while ((pos = j.find(",\n", pos)) != std::string::npos) ++objects, pos += 2;
  EXPECT_EQ(objects, 6u) << j;
  EXPECT_NE(j.find("\"name\":\"process_name\",\"pid\":5"), std::string::npos) << j;
  EXPECT_NE(j.find("\"args\":{\"name\":\"rank 5 (host)\"}"), std::string::npos) << j;
  EXPECT_NE(j.find("{\"ph\":\"X\",\"cat\":\"forward\",\"name\":\"conv\\\"1\",\"pid\":5,\"tid\":0,"
                   "\"ts\":1.500,\"dur\":0.750,\"args\":{\"step\":2,\"k\":1}}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("{\"ph\":\"b\",\"cat\":\"allreduce\",\"name\":\"bucket 0\",\"pid\":5,"
                   "\"tid\":0,\"ts\":3.000,\"id\":21474836480,\"args\":{\"step\":2,\"bytes\":4}}"),
            std::string::npos)
      << j;
  // Balanced braces outside strings.
  int depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < j.size(); ++i) {
    if (in_str) {
      if (j[i] == '\\') ++i;
      else if (j[i] == '"') in_str = false;
    } else if (j[i] == '"') {
      in_str = true;
    } else if (j[i] == '{') {
      ++depth;
    } else if (j[i] == '}') {
      ASSERT_GT(depth, 0) << "at " << i;
      --depth;
    }
  }
  EXPECT_EQ(depth, 0);
  EXPECT_FALSE(in_str);
}

}  // namespace
}  // namespace ft
