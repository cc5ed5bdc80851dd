#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include <quarry/core/thread_pool.hpp>

using namespace quarry;

TEST_CASE("parallel_for covers the range exactly once, in disjoint chunks") {
  for (unsigned threads : {1u, 2u, 4u, 7u}) {
    ThreadPool pool(threads);
    CHECK(pool.size() == threads);
    for (std::int64_t n : {0, 1, 5, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      pool.parallel_for(0, n, [&](std::int64_t lo, std::int64_t hi) {
        CHECK(lo < hi);
        for (std::int64_t i = lo; i < hi; ++i) hits[static_cast<std::size_t>(i)]++;
      });
      for (auto& h : hits) REQUIRE(h.load() == 1);
    }
  }
}

TEST_CASE("parallel_for honours the grain and an offset range") {
  ThreadPool pool(4);
  std::atomic<std::int64_t> sum{0};
  pool.parallel_for(10, 110, [&](std::int64_t lo, std::int64_t hi) {
    if (hi != 110) CHECK(hi - lo >= 16);
    for (std::int64_t i = lo; i < hi; ++i) sum += i;
  }, 16);
  CHECK(sum.load() == (10 + 109) * 100 / 2);
}

TEST_CASE("the first exception is rethrown in the caller, and the pool stays usable") {
  ThreadPool pool(3);
  CHECK_THROWS_AS(pool.parallel_for(0, 1000, [](std::int64_t lo, std::int64_t) {
    if (lo >= 500) throw std::runtime_error("chunk failed");
  }), std::runtime_error);
  std::atomic<int> count{0};
  pool.parallel_for(0, 100, [&](std::int64_t lo, std::int64_t hi) { count += static_cast<int>(hi - lo); });
  CHECK(count.load() == 100);
}

TEST_CASE("nested parallel_for runs inline; concurrent callers take turns") {
  ThreadPool pool(4);
  std::atomic<std::int64_t> total{0};
  pool.parallel_for(0, 8, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i)
      pool.parallel_for(0, 100, [&](std::int64_t a, std::int64_t b) { total += b - a; });
  });
  CHECK(total.load() == 800);

  std::atomic<std::int64_t> grand{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        pool.parallel_for(0, 1000, [&](std::int64_t a, std::int64_t b) { grand += b - a; });
    });
  for (auto& t : callers) t.join();
  CHECK(grand.load() == 4 * 50 * 1000);
}

TEST_CASE("calls back to back (workers polling) and after pauses (workers asleep) all complete") {
  // Workers poll for new work for a while after each call, then sleep: both ways in turn.
  ThreadPool pool(3);
  std::atomic<std::int64_t> total{0};
  std::int64_t expected = 0;
  for (int rep = 0; rep < 40; ++rep) {
    if (rep % 8 == 7) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the polling
    const std::int64_t n = 1 + rep * 37;
    pool.parallel_for(0, n, [&](std::int64_t a, std::int64_t b) { total += b - a; });
    expected += n;
    CHECK(total.load() == expected);  // parallel_for returned after every chunk was done
  }
}

TEST_CASE("serial parallel_for with no pool, and the default pool on request") {
  std::int64_t calls = 0;
  parallel_for(nullptr, 0, 10, [&](std::int64_t lo, std::int64_t hi) {
    CHECK(lo == 0);
    CHECK(hi == 10);
    ++calls;
  });
  CHECK(calls == 1);
  ThreadPool& p = default_thread_pool();
  CHECK(p.size() >= 1);
  CHECK(&p == &default_thread_pool());
}

TEST_CASE("many more threads than cores: workers that wake after a call ended stay out of it") {
  // On two cores most of 16 threads wake when the call they were woken for is over; they must
  // neither run a chunk of it nor touch the next call's job (the sanitizers' build checks the latter).
  ThreadPool pool(16);
  std::vector<std::int64_t> cells(64, 0);
  for (int rep = 0; rep < 3000; ++rep) {
    pool.parallel_for(0, 64, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) cells[static_cast<std::size_t>(i)] += i;  // each cell: one chunk per call
    });
    if (rep % 1000 == 999) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the polling
  }
  for (std::int64_t i = 0; i < 64; ++i) REQUIRE(cells[static_cast<std::size_t>(i)] == 3000 * i);
}
