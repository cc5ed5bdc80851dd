#include <doctest/doctest.h>

#include <quarry/core/eigen.hpp>

using namespace quarry;

TEST_CASE("as_eigen maps a tensor without copying, both ways") {
  Tensor<float> t({2, 3}, {1, 2, 3, 4, 5, 6});
  auto m = as_eigen(t);
  CHECK(m.rows() == 2);
  CHECK(m.cols() == 3);
  CHECK(m.data() == t.data());
  CHECK(m(1, 2) == 6.f);
  m(0, 1) = 20.f;  // writes the tensor's memory
  CHECK(t(0, 1) == 20.f);

  Eigen::MatrixXf x = as_eigen(t) * as_eigen(t).transpose();  // Eigen does the product
  CHECK(x(0, 0) == doctest::Approx(1 + 400 + 9));

  const Tensor<double> d({2, 2}, {1, 2, 3, 4});
  auto md = as_eigen(d);
  CHECK(md.sum() == 10.0);
}

TEST_CASE("as_eigen accepts row-strided views and rejects the rest with the shape named") {
  Tensor<float> t({3, 4});
  for (int i = 0; i < 12; ++i) t.data()[i] = float(i);
  auto cols = as_eigen(t.slice(1, 1, 3));  // a column block: row stride 4, 2 columns
  CHECK(cols.rows() == 3);
  CHECK(cols.cols() == 2);
  CHECK(cols(2, 1) == 10.f);
  CHECK(cols.outerStride() == 4);
  try {
    (void)as_eigen(t.t());
    FAIL("no error");
  } catch (const error& e) {
    CHECK(std::string(e.what()).find("unit column stride; shape [4, 3] has strides [1, 4]") != std::string::npos);
  }
  CHECK_THROWS_AS((void)as_eigen(t.reshape({12})), error);
}

TEST_CASE("view_of an Eigen row-major matrix") {
  EigenRowMajor<float> m(2, 2);
  m << 1, 2, 3, 4;
  auto v = view_of(m);
  CHECK(v.shape() == Shape{2, 2});
  CHECK(v(1, 0) == 3.f);
  v(1, 1) = 40.f;
  CHECK(m(1, 1) == 40.f);
}
